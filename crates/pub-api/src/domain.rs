//! Validated input types. Raw strings from clients stop here: a handler only ever
//! holds an `Email`, a `Password`, a `Nickname` or a `GoodsFields` that passed `parse`.
//!
//! Rules follow the original TicketNest so its clients keep working: passwords of 8+
//! characters with an upper-case letter, a lower-case letter, a digit and a symbol;
//! nicknames of 1 to 10 characters without spaces.

use chrono::{DateTime, NaiveDate, Utc};

use crate::{db::GoodsFields, error::ApiError};

/// Longest password accepted. Bounds the argon2 input so a huge password is not a
/// cheap way to burn CPU.
const MAX_PASSWORD_CHARS: usize = 128;
const MAX_TITLE_CHARS: usize = 100;
const MAX_CONTENT_CHARS: usize = 5_000;
const MAX_URL_CHARS: usize = 2_048;
/// Highest price accepted (in the smallest currency unit).
const MAX_PRICE: i64 = 1_000_000_000;
/// Most seats one goods may offer.
const MAX_BOOKING_LIMIT: i64 = 1_000_000;
/// A day: the longest a hold may last.
const MAX_HOLD_SECONDS: i64 = 86_400;
/// Most seats one booking request may take.
const MAX_PER_BOOKING: i64 = 100;

#[derive(Debug, Clone)]
pub struct Email(String);

impl Email {
    /// # Errors
    /// 400 naming `email` unless it is a plausible address of at most 254 characters.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let trimmed = raw.trim();
        // A NUL is refused here, not by PostgreSQL (which cannot store one: a 500).
        if trimmed.len() > 254
            || trimmed.contains('\0')
            || !email_address::EmailAddress::is_valid(trimmed)
        {
            return Err(ApiError::validation(
                "email",
                "email must be a valid address of at most 254 characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct Password(String);

impl Password {
    /// # Errors
    /// 400 naming `password` when it is too short, too long, or misses a character class.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let chars = raw.chars().count();
        let strong = (8..=MAX_PASSWORD_CHARS).contains(&chars)
            && raw.chars().any(|c| c.is_uppercase())
            && raw.chars().any(|c| c.is_lowercase())
            && raw.chars().any(|c| c.is_ascii_digit())
            && raw
                .chars()
                .any(|c| !c.is_alphanumeric() && !c.is_whitespace());
        if !strong {
            return Err(ApiError::validation(
                "password",
                format!(
                    "password must be 8 to {MAX_PASSWORD_CHARS} characters with an upper-case \
                     letter, a lower-case letter, a digit and a symbol"
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[derive(Debug, Clone)]
pub struct Nickname(String);

impl Nickname {
    /// # Errors
    /// 400 naming `nickname` when empty, longer than 10 characters, or containing whitespace.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > 10 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ApiError::validation(
                "nickname",
                "nickname must be 1 to 10 characters with no spaces",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Parses a show date: RFC 3339 (`2026-12-24T19:30:00+09:00`) or a plain date (`2026-12-24`, midnight UTC).
fn parse_show_date(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let raw = raw.trim();
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            ApiError::validation(
                "showDate",
                "showDate must be an RFC 3339 date-time (2026-12-24T19:30:00Z) or a date (2026-12-24)",
            )
        })
}

/// An RFC 3339 instant between 1970 and 9999 (UTC), kept to the millisecond (the
/// precision of stream entry times, by which the worker judges arrivals). Normalised
/// through its millisecond count, so a leap second (`10:00:60`) is the instant
/// PostgreSQL will store (`10:01:00`).
fn parse_instant(field: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let invalid = || {
        ApiError::validation(
            field,
            format!(
                "{field} must be an RFC 3339 date-time between 1970 and 9999, such as 2026-12-01T10:00:00Z"
            ),
        )
    };
    let parsed = DateTime::parse_from_rfc3339(raw.trim()).map_err(|_| invalid())?;
    let ms = parsed.timestamp_millis();
    let last_ms = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    if !(0..=last_ms).contains(&ms) {
        return Err(invalid());
    }
    DateTime::from_timestamp_millis(ms).ok_or_else(invalid)
}

fn bounded_text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let value = raw.trim();
    // PostgreSQL's text cannot hold a NUL: refused here (400), not there (a 500).
    if value.contains('\0') {
        return Err(ApiError::validation(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    let chars = value.chars().count();
    if chars < min || chars > max {
        let message = if min > 0 {
            format!("{field} must be {min} to {max} characters")
        } else {
            format!("{field} must be at most {max} characters")
        };
        return Err(ApiError::validation(field, message));
    }
    Ok(value.to_owned())
}

/// `value` as an `i32` within `range`, or a 400 naming `field`.
fn int_in(
    field: &'static str,
    value: i64,
    range: std::ops::RangeInclusive<i64>,
    message: String,
) -> Result<i32, ApiError> {
    if range.contains(&value) {
        i32::try_from(value).map_err(|_| ApiError::validation(field, message))
    } else {
        Err(ApiError::validation(field, message))
    }
}

/// The raw fields of a goods, as sent by a client.
pub struct GoodsInput<'a> {
    pub title: &'a str,
    pub content: &'a str,
    pub price: i64,
    pub img_url: &'a str,
    pub show_date: &'a str,
    pub booking_limit: i64,
    pub max_per_booking: Option<i64>,
    /// RFC 3339; bookings are taken from then on (none: from creation).
    pub sale_opens_at: Option<&'a str>,
    /// RFC 3339; no booking is taken from then on (none: until further notice).
    pub sale_closes_at: Option<&'a str>,
    /// At most this many waitlisted bookings (none: no cap).
    pub waitlist_limit: Option<i64>,
    /// Seconds a winning booking holds its seats unconfirmed (none: 0, no holds).
    pub hold_seconds: Option<i64>,
}

impl GoodsInput<'_> {
    /// # Errors
    /// 400 naming the first invalid field.
    pub fn parse(self) -> Result<GoodsFields, ApiError> {
        let title = bounded_text("title", self.title, 1, MAX_TITLE_CHARS)?;
        let content = bounded_text("content", self.content, 0, MAX_CONTENT_CHARS)?;
        if !(0..=MAX_PRICE).contains(&self.price) {
            return Err(ApiError::validation(
                "price",
                format!("price must be between 0 and {MAX_PRICE}"),
            ));
        }
        let img_url = bounded_text("imgUrl", self.img_url, 0, MAX_URL_CHARS)?;
        let http_url = img_url.starts_with("https://") || img_url.starts_with("http://");
        if !(img_url.is_empty() || http_url) {
            return Err(ApiError::validation(
                "imgUrl",
                "imgUrl must be an http(s) URL or empty",
            ));
        }
        let show_date = parse_show_date(self.show_date)?;
        let booking_limit = int_in(
            "bookingLimit",
            self.booking_limit,
            1..=MAX_BOOKING_LIMIT,
            format!("bookingLimit must be between 1 and {MAX_BOOKING_LIMIT}"),
        )?;
        let max_per_booking = int_in(
            "maxPerBooking",
            self.max_per_booking.unwrap_or(1),
            1..=MAX_PER_BOOKING.min(self.booking_limit),
            format!(
                "maxPerBooking must be between 1 and {MAX_PER_BOOKING} (and at most bookingLimit)"
            ),
        )?;
        let sale_opens_at = self
            .sale_opens_at
            .map(|raw| parse_instant("saleOpensAt", raw))
            .transpose()?;
        let sale_closes_at = self
            .sale_closes_at
            .map(|raw| parse_instant("saleClosesAt", raw))
            .transpose()?;
        if let (Some(opens), Some(closes)) = (sale_opens_at, sale_closes_at) {
            if closes <= opens {
                return Err(ApiError::validation(
                    "saleClosesAt",
                    "saleClosesAt must be after saleOpensAt",
                ));
            }
        }
        let waitlist_limit = self
            .waitlist_limit
            .map(|cap| {
                int_in(
                    "waitlistLimit",
                    cap,
                    0..=MAX_BOOKING_LIMIT,
                    format!("waitlistLimit must be between 0 and {MAX_BOOKING_LIMIT}"),
                )
            })
            .transpose()?;
        let hold_seconds = int_in(
            "holdSeconds",
            self.hold_seconds.unwrap_or(0),
            0..=MAX_HOLD_SECONDS,
            format!("holdSeconds must be between 0 and {MAX_HOLD_SECONDS}"),
        )?;
        Ok(GoodsFields {
            title,
            content,
            price: self.price,
            img_url,
            show_date,
            booking_limit,
            max_per_booking,
            sale_opens_at,
            sale_closes_at,
            waitlist_limit,
            hold_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> &'static str {
        match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn passwords_need_every_character_class() {
        assert!(Password::parse("Abcdef1!").is_ok());
        for weak in ["Abcde1!", "abcdef1!", "ABCDEF1!", "Abcdefg!", "Abcdefg1"] {
            assert_eq!(
                field_of(Password::parse(weak).unwrap_err()),
                "password",
                "{weak}"
            );
        }
        assert!(Password::parse(&format!("Aa1!{}", "x".repeat(200))).is_err());
    }

    #[test]
    fn nicknames_are_short_and_spaceless() {
        assert!(Nickname::parse("neo").is_ok());
        assert!(Nickname::parse("ten_chars_").is_ok());
        for bad in ["", "eleven_char", "a b", "tab\tx"] {
            assert_eq!(
                field_of(Nickname::parse(bad).unwrap_err()),
                "nickname",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn emails_must_look_like_addresses() {
        assert!(Email::parse("fan@example.com").is_ok());
        for bad in ["", "no-at-sign", "a@", "@b.c"] {
            assert_eq!(field_of(Email::parse(bad).unwrap_err()), "email", "{bad:?}");
        }
    }

    fn goods<'a>() -> GoodsInput<'a> {
        GoodsInput {
            title: "Show",
            content: "",
            price: 1000,
            img_url: "https://img.example/x.png",
            show_date: "2026-12-24T19:30:00Z",
            booking_limit: 100,
            max_per_booking: None,
            sale_opens_at: None,
            sale_closes_at: None,
            waitlist_limit: None,
            hold_seconds: None,
        }
    }

    #[test]
    fn goods_input_names_the_invalid_field() {
        assert_eq!(goods().parse().map(|g| g.max_per_booking).ok(), Some(1));
        let cases: Vec<(GoodsInput<'_>, &str)> = vec![
            (
                GoodsInput {
                    waitlist_limit: Some(-1),
                    ..goods()
                },
                "waitlistLimit",
            ),
            (
                GoodsInput {
                    hold_seconds: Some(86_401),
                    ..goods()
                },
                "holdSeconds",
            ),
            (
                GoodsInput {
                    hold_seconds: Some(-1),
                    ..goods()
                },
                "holdSeconds",
            ),
            (
                GoodsInput {
                    title: "  ",
                    ..goods()
                },
                "title",
            ),
            (
                GoodsInput {
                    price: -1,
                    ..goods()
                },
                "price",
            ),
            (
                GoodsInput {
                    booking_limit: 0,
                    ..goods()
                },
                "bookingLimit",
            ),
            (
                GoodsInput {
                    booking_limit: -5,
                    ..goods()
                },
                "bookingLimit",
            ),
            (
                GoodsInput {
                    show_date: "tomorrow",
                    ..goods()
                },
                "showDate",
            ),
            (
                GoodsInput {
                    img_url: "ftp://x",
                    ..goods()
                },
                "imgUrl",
            ),
            (
                GoodsInput {
                    max_per_booking: Some(0),
                    ..goods()
                },
                "maxPerBooking",
            ),
            (
                GoodsInput {
                    max_per_booking: Some(101),
                    booking_limit: 1000,
                    ..goods()
                },
                "maxPerBooking",
            ),
            (
                GoodsInput {
                    sale_opens_at: Some("soon"),
                    ..goods()
                },
                "saleOpensAt",
            ),
            (
                GoodsInput {
                    sale_opens_at: Some("2026-12-01T10:00:00Z"),
                    sale_closes_at: Some("2026-12-01T10:00:00Z"),
                    ..goods()
                },
                "saleClosesAt",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(field_of(input.parse().unwrap_err()), field);
        }
        for (input, field) in [
            (
                GoodsInput {
                    content: "a\0b",
                    ..goods()
                },
                "content",
            ),
            (
                GoodsInput {
                    title: "\0",
                    ..goods()
                },
                "title",
            ),
            (
                GoodsInput {
                    img_url: "https://x/\0",
                    ..goods()
                },
                "imgUrl",
            ),
        ] {
            assert_eq!(field_of(input.parse().unwrap_err()), field);
        }
        assert_eq!(field_of(Email::parse("a\0@b.co").unwrap_err()), "email");
        let long_title = "t".repeat(101);
        assert_eq!(
            field_of(
                GoodsInput {
                    title: &long_title,
                    ..goods()
                }
                .parse()
                .unwrap_err()
            ),
            "title"
        );
    }

    #[test]
    fn sale_window_instants_are_normalised_and_bounded() {
        // A leap second is the next minute's first second, as PostgreSQL stores it:
        // equal bounds are refused here, not by the database's CHECK (a 500).
        let leap = GoodsInput {
            sale_opens_at: Some("2026-06-01T10:00:60Z"),
            sale_closes_at: Some("2026-06-01T10:01:00Z"),
            ..goods()
        };
        assert_eq!(field_of(leap.parse().unwrap_err()), "saleClosesAt");
        for (raw, ok) in [
            ("9999-12-31T23:59:59-23:59", false),
            ("0000-01-01T00:00:00+23:59", false),
            ("1969-12-31T23:59:59Z", false),
            ("1970-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59.999Z", true),
        ] {
            let input = GoodsInput {
                sale_opens_at: Some(raw),
                ..goods()
            };
            assert_eq!(input.parse().is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn sale_window_instants_are_kept_to_the_millisecond() {
        let fields = GoodsInput {
            sale_opens_at: Some("2026-12-01T10:00:00.123456+01:00"),
            ..goods()
        }
        .parse()
        .expect("valid");
        assert_eq!(
            fields.sale_opens_at.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-12-01T09:00:00.123+00:00")
        );
        assert_eq!(fields.sale_closes_at, None);
    }

    #[test]
    fn show_dates_accept_rfc3339_and_plain_dates() {
        assert!(parse_show_date("2026-12-24").is_ok());
        assert!(parse_show_date("2026-12-24T19:30:00+09:00").is_ok());
        assert!(parse_show_date("2026-13-01").is_err());
    }
}
