//! The correctness check over a sale's decision log.
//!
//! Given the log in stream order and the set of requests the API accepted, it replays
//! the decision rule (a request is confirmed if the seats left at its turn cover it,
//! else waitlisted) and names every breach: oversold seats, a user confirmed twice, a
//! decision out of FIFO order, accepted requests never decided, decisions for requests
//! nobody accepted. Pure: the tests feed it logs with injected breaches.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// One decision, as read from `booking_requests` in stream order.
#[derive(Debug, Clone)]
pub struct LoggedDecision {
    pub request_id: String,
    pub user_id: i64,
    pub quantity: i32,
    pub decision: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Breach {
    #[error("oversold: {confirmed} seats confirmed for {seats}")]
    Oversold { confirmed: i64, seats: i64 },
    #[error("user {user_id} confirmed {times} times")]
    UserConfirmedTwice { user_id: i64, times: usize },
    #[error(
        "out of FIFO order at position {position}: request {request_id} was {actual} but {expected} was due \
         ({seats_left} seats left at its turn)"
    )]
    OutOfOrder {
        position: usize,
        request_id: String,
        expected: String,
        actual: String,
        seats_left: i64,
    },
    #[error("{count} accepted requests were never decided (e.g. {example})")]
    Undecided { count: usize, example: String },
    #[error("{count} decisions for requests this run never had accepted (e.g. {example})")]
    Unknown { count: usize, example: String },
}

/// Checks a sale of `seats` seats. `rows` must be in stream order.
pub fn check(rows: &[LoggedDecision], seats: i64, accepted: &HashSet<String>) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let decided: HashSet<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    let mut undecided: Vec<&String> = accepted
        .iter()
        .filter(|id| !decided.contains(id.as_str()))
        .collect();
    if !undecided.is_empty() {
        undecided.sort();
        breaches.push(Breach::Undecided {
            count: undecided.len(),
            example: undecided[0].clone(),
        });
    }
    let unknown: Vec<&LoggedDecision> = rows
        .iter()
        .filter(|r| !accepted.contains(&r.request_id))
        .collect();
    if let Some(first) = unknown.first() {
        breaches.push(Breach::Unknown {
            count: unknown.len(),
            example: first.request_id.clone(),
        });
    }

    let mut left = seats;
    let mut confirmed_seats = 0_i64;
    let mut confirmations: HashMap<i64, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        if row.decision == "rejected" {
            continue;
        }
        let quantity = i64::from(row.quantity);
        let expected = if quantity <= left {
            "confirmed"
        } else {
            "waitlisted"
        };
        if row.decision != expected {
            breaches.push(Breach::OutOfOrder {
                position: i + 1,
                request_id: row.request_id.clone(),
                expected: expected.to_owned(),
                actual: row.decision.clone(),
                seats_left: left,
            });
        }
        if row.decision == "confirmed" {
            confirmed_seats += quantity;
            *confirmations.entry(row.user_id).or_default() += 1;
        }
        if expected == "confirmed" {
            left -= quantity;
        }
    }
    if confirmed_seats > seats {
        breaches.push(Breach::Oversold {
            confirmed: confirmed_seats,
            seats,
        });
    }
    let mut twice: Vec<(i64, usize)> = confirmations.into_iter().filter(|(_, n)| *n > 1).collect();
    twice.sort_unstable();
    breaches.extend(
        twice
            .into_iter()
            .map(|(user_id, times)| Breach::UserConfirmedTwice { user_id, times }),
    );
    breaches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, user_id: i64, decision: &str) -> LoggedDecision {
        LoggedDecision {
            request_id: format!("r{i}"),
            user_id,
            quantity: 1,
            decision: decision.to_owned(),
            reason: None,
        }
    }

    /// A correct log: `seats` confirmed, then waitlisted.
    fn sale(requests: usize, seats: usize) -> (Vec<LoggedDecision>, HashSet<String>) {
        let rows: Vec<LoggedDecision> = (0..requests)
            .map(|i| {
                row(
                    i,
                    i as i64 + 1,
                    if i < seats { "confirmed" } else { "waitlisted" },
                )
            })
            .collect();
        let accepted = rows.iter().map(|r| r.request_id.clone()).collect();
        (rows, accepted)
    }

    #[test]
    fn a_correct_sale_has_no_breach() {
        let (rows, accepted) = sale(10, 3);
        assert_eq!(check(&rows, 3, &accepted), []);
    }

    #[test]
    fn an_extra_confirmed_seat_is_named_as_oversold_and_out_of_order() {
        let (mut rows, accepted) = sale(10, 3);
        rows[5].decision = "confirmed".into();
        let breaches = check(&rows, 3, &accepted);
        assert!(
            breaches.contains(&Breach::Oversold {
                confirmed: 4,
                seats: 3
            }),
            "{breaches:?}"
        );
        assert!(breaches
            .iter()
            .any(|b| matches!(b, Breach::OutOfOrder { position: 6, .. })));
    }

    #[test]
    fn an_out_of_order_confirmation_is_named() {
        let (mut rows, accepted) = sale(10, 3);
        // The third request was waitlisted and a later one confirmed instead.
        rows[2].decision = "waitlisted".into();
        rows[7].decision = "confirmed".into();
        let breaches = check(&rows, 3, &accepted);
        assert_eq!(breaches.len(), 2, "{breaches:?}");
        assert!(
            breaches[0].to_string().contains("position 3"),
            "{}",
            breaches[0]
        );
        assert!(
            breaches[1].to_string().contains("position 8"),
            "{}",
            breaches[1]
        );
    }

    #[test]
    fn a_user_confirmed_twice_is_named() {
        let (mut rows, accepted) = sale(5, 3);
        rows[1].user_id = rows[0].user_id;
        let breaches = check(&rows, 3, &accepted);
        assert_eq!(
            breaches,
            [Breach::UserConfirmedTwice {
                user_id: 1,
                times: 2
            }]
        );
    }

    #[test]
    fn undecided_and_unknown_requests_are_named() {
        let (mut rows, mut accepted) = sale(5, 3);
        accepted.insert("lost".into());
        rows.push(row(99, 99, "waitlisted"));
        let breaches = check(&rows, 3, &accepted);
        assert!(breaches.contains(&Breach::Undecided {
            count: 1,
            example: "lost".into()
        }));
        assert!(breaches.contains(&Breach::Unknown {
            count: 1,
            example: "r99".into()
        }));
    }

    #[test]
    fn rejected_requests_take_no_seat_and_larger_requests_may_waitlist_first() {
        let mut rows = vec![
            row(0, 1, "confirmed"),
            row(1, 2, "rejected"),
            row(2, 3, "waitlisted"),
            row(3, 4, "confirmed"),
        ];
        rows[0].quantity = 2;
        rows[2].quantity = 3;
        rows[3].quantity = 1;
        rows[1].reason = Some("already_booked".into());
        let accepted = rows.iter().map(|r| r.request_id.clone()).collect();
        assert_eq!(check(&rows, 3, &accepted), []);
    }
}
