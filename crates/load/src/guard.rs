//! The loopback guard: `ticketnest-load` fires at loopback targets only, unless the
//! operator says otherwise with `--allow-remote`. A load test aimed at the wrong host
//! is an attack on someone else; the guard looks at the URL only (no DNS lookup, no
//! packet sent) before anything else happens.

use std::net::IpAddr;

use reqwest::Url;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    #[error("`{0}` is not a valid http(s) URL")]
    Invalid(String),
    #[error(
        "refusing to load-test `{0}`: it is not a loopback address (127.0.0.0/8, ::1, localhost); \
         pass --allow-remote if you own that system and mean it"
    )]
    Remote(String),
}

/// Parses the target and refuses non-loopback hosts unless `allow_remote`.
///
/// # Errors
/// An unparsable URL, or a remote host without `allow_remote`.
pub fn check_target(raw: &str, allow_remote: bool) -> Result<Url, GuardError> {
    let url = Url::parse(raw).map_err(|_| GuardError::Invalid(raw.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(GuardError::Invalid(raw.to_owned()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| GuardError::Invalid(raw.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_remote {
        Ok(url)
    } else {
        Err(GuardError::Remote(host.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_pass() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:8080/",
            "http://[::1]:8080",
        ] {
            assert!(check_target(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn remote_targets_are_refused_without_the_flag() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.10",
            "http://example.com",
            "http://127.0.0.1.example.com",
            "http://[2001:db8::1]",
        ] {
            assert!(
                matches!(check_target(url, false), Err(GuardError::Remote(_))),
                "{url}"
            );
            assert!(check_target(url, true).is_ok(), "{url}");
        }
        assert!(matches!(
            check_target("ftp://127.0.0.1", false),
            Err(GuardError::Invalid(_))
        ));
        assert!(matches!(
            check_target("not a url", false),
            Err(GuardError::Invalid(_))
        ));
    }
}
