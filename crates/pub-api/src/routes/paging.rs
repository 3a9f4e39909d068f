//! Keyset pages of a list: `?limit=&cursor=`, answered with a bare JSON array and,
//! when more follow, a `Link: <...>; rel="next"` header (as GitHub's API pages).

use actix_web::{http::header, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;

/// `?limit=&cursor=`; another parameter is refused (400 `invalid_query`).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where the previous page ended (the id its `Link` names).
    #[param(minimum = 0, nullable = false)]
    cursor: Option<i64>,
    /// Rows per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    limit: Option<i64>,
}

/// A checked page request.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub cursor: Option<i64>,
}

impl PageQuery {
    /// # Errors
    /// 400 `invalid_query` for a `limit` outside 1 to 100 or a negative `cursor`.
    pub fn checked(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        if self.cursor.is_some_and(|c| c < 0) {
            return Err(ApiError::InvalidQuery("cursor must not be negative".into()));
        }
        Ok(Page {
            limit,
            cursor: self.cursor,
        })
    }
}

impl Page {
    /// Rows to fetch: one more than the page, to tell whether another follows.
    pub fn fetch(self) -> i64 {
        self.limit + 1
    }

    /// `200` with the page of `rows` (fetched with [`Page::fetch`]) as a bare array,
    /// and a `Link` to the next page of `path` when there is one, its cursor the last
    /// row's `id`.
    pub fn respond<T: Serialize>(
        self,
        path: &str,
        mut rows: Vec<T>,
        id: impl Fn(&T) -> i64,
    ) -> HttpResponse {
        let size = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        let mut response = HttpResponse::Ok();
        if let Some(last) = rows.last().filter(|_| more) {
            response.insert_header((
                header::LINK,
                format!(
                    "<{path}?limit={}&cursor={}>; rel=\"next\"",
                    self.limit,
                    id(last)
                ),
            ));
        }
        response.json(rows)
    }
}
