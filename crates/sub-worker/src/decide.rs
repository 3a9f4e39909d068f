//! The decision rule, as a pure function over one batch.
//!
//! Requests are decided strictly in stream order, per goods: a request is confirmed if
//! the seats left at its turn cover its quantity, otherwise waitlisted (a smaller later
//! request may still fit after a larger one waitlisted). A user who already holds a live
//! booking or a waitlist place for the goods is rejected `already_booked`; a goods that
//! no longer exists gives `goods_not_found`; a deleted user gives `user_not_found`; a
//! quantity above the goods' current `maxPerBooking` gives `invalid_quantity`; a request
//! that arrived (its stream entry time) before the goods' sale window opens or once it
//! has closed gives `sale_not_open` or `sale_closed`, whatever the API's cache let
//! through.
//! Keeping this free of I/O lets the rule be tested exhaustively without a database.

use std::collections::{HashMap, HashSet};

use shared::decision::{Decision, RejectReason};

/// Seats and order state of one goods, read under its row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoodsState {
    pub booking_limit: i32,
    pub booked: i32,
    pub max_per_booking: i32,
    /// Requests decided so far for this goods; the next decision gets `decided + 1`.
    pub decided: i64,
    /// The sale window, Unix milliseconds: open from (inclusive), closed from.
    pub sale_opens_ms: Option<i64>,
    pub sale_closes_ms: Option<i64>,
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub goods_id: i64,
    pub user_id: i64,
    pub quantity: i32,
    /// When it arrived: its stream entry's time, Unix milliseconds.
    pub arrived_ms: i64,
}

/// The verdict on one request and its place in its goods' decision order
/// (`None` when the goods does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub position: Option<i64>,
}

/// Decides `asks` in order. `goods` is updated in place (seats taken, decisions
/// counted) so the caller can write the new counters; `held` is the set of
/// `(goods_id, user_id)` pairs with a live booking or waitlist place, and grows as
/// requests are granted.
pub fn decide(
    asks: &[Ask],
    goods: &mut HashMap<i64, GoodsState>,
    held: &mut HashSet<(i64, i64)>,
    live_users: &HashSet<i64>,
) -> Vec<Verdict> {
    asks.iter()
        .map(|ask| {
            let Some(state) = goods.get_mut(&ask.goods_id) else {
                return Verdict {
                    decision: Decision::Rejected(RejectReason::GoodsNotFound),
                    position: None,
                };
            };
            state.decided += 1;
            let position = Some(state.decided);
            let decision = if state.sale_opens_ms.is_some_and(|at| ask.arrived_ms < at) {
                Decision::Rejected(RejectReason::SaleNotOpen)
            } else if state.sale_closes_ms.is_some_and(|at| ask.arrived_ms >= at) {
                Decision::Rejected(RejectReason::SaleClosed)
            } else if !live_users.contains(&ask.user_id) {
                Decision::Rejected(RejectReason::UserNotFound)
            } else if ask.quantity < 1 || ask.quantity > state.max_per_booking {
                Decision::Rejected(RejectReason::InvalidQuantity)
            } else if !held.insert((ask.goods_id, ask.user_id)) {
                Decision::Rejected(RejectReason::AlreadyBooked)
            } else if state.booking_limit - state.booked >= ask.quantity {
                state.booked += ask.quantity;
                Decision::Confirmed
            } else {
                Decision::Waitlisted
            };
            Verdict { decision, position }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goods(limit: i32, max_per_booking: i32) -> HashMap<i64, GoodsState> {
        HashMap::from([(
            1,
            GoodsState {
                booking_limit: limit,
                booked: 0,
                max_per_booking,
                decided: 0,
                sale_opens_ms: None,
                sale_closes_ms: None,
            },
        )])
    }

    fn ask(user_id: i64, quantity: i32) -> Ask {
        Ask {
            goods_id: 1,
            user_id,
            quantity,
            arrived_ms: 1_000,
        }
    }

    fn users(n: i64) -> HashSet<i64> {
        (1..=n).collect()
    }

    fn outcomes(verdicts: &[Verdict]) -> Vec<Decision> {
        verdicts.iter().map(|v| v.decision).collect()
    }

    #[test]
    fn the_first_requests_that_fit_are_confirmed_and_the_rest_waitlisted_in_order() {
        let mut g = goods(2, 1);
        let asks: Vec<Ask> = (1..=4).map(|u| ask(u, 1)).collect();
        let v = decide(&asks, &mut g, &mut HashSet::new(), &users(4));
        use Decision::*;
        assert_eq!(outcomes(&v), [Confirmed, Confirmed, Waitlisted, Waitlisted]);
        assert_eq!(
            v.iter().map(|v| v.position).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(g[&1].booked, 2);
        assert_eq!(g[&1].decided, 4);
    }

    #[test]
    fn a_large_request_waitlists_while_a_later_small_one_still_fits() {
        let mut g = goods(5, 4);
        let asks = [ask(1, 3), ask(2, 3), ask(3, 2), ask(4, 1)];
        let v = decide(&asks, &mut g, &mut HashSet::new(), &users(4));
        use Decision::*;
        assert_eq!(outcomes(&v), [Confirmed, Waitlisted, Confirmed, Waitlisted]);
        assert_eq!(g[&1].booked, 5);
    }

    #[test]
    fn a_second_request_of_the_same_user_is_already_booked_even_after_a_waitlist() {
        let mut g = goods(1, 1);
        let asks = [ask(1, 1), ask(2, 1), ask(1, 1), ask(2, 1)];
        let v = decide(&asks, &mut g, &mut HashSet::new(), &users(2));
        use Decision::*;
        let dup = Rejected(RejectReason::AlreadyBooked);
        assert_eq!(outcomes(&v), [Confirmed, Waitlisted, dup, dup]);
    }

    #[test]
    fn held_places_from_earlier_batches_count() {
        let mut g = goods(10, 1);
        let mut held = HashSet::from([(1, 7)]);
        let v = decide(&[ask(7, 1)], &mut g, &mut held, &users(7));
        assert_eq!(
            v[0].decision,
            Decision::Rejected(RejectReason::AlreadyBooked)
        );
        assert_eq!(g[&1].booked, 0);
    }

    #[test]
    fn missing_goods_deleted_users_and_bad_quantities_are_rejected_with_reasons() {
        let mut g = goods(10, 2);
        let asks = [
            Ask {
                goods_id: 99,
                user_id: 1,
                quantity: 1,
                arrived_ms: 1_000,
            },
            ask(5, 1),
            ask(1, 3),
        ];
        let v = decide(&asks, &mut g, &mut HashSet::new(), &users(2));
        assert_eq!(
            outcomes(&v),
            [
                Decision::Rejected(RejectReason::GoodsNotFound),
                Decision::Rejected(RejectReason::UserNotFound),
                Decision::Rejected(RejectReason::InvalidQuantity),
            ]
        );
        assert_eq!(v[0].position, None);
        assert_eq!(g[&1].booked, 0);
    }

    #[test]
    fn requests_arriving_outside_the_sale_window_are_rejected_and_take_no_seat() {
        let mut g = goods(10, 1);
        if let Some(state) = g.get_mut(&1) {
            state.sale_opens_ms = Some(1_000);
            state.sale_closes_ms = Some(2_000);
        }
        let at = |user_id, arrived_ms| Ask {
            arrived_ms,
            ..ask(user_id, 1)
        };
        let asks = [
            at(1, 999),
            at(2, 1_000),
            at(3, 1_999),
            at(4, 2_000),
            at(1, 1_500),
        ];
        let v = decide(&asks, &mut g, &mut HashSet::new(), &users(4));
        use Decision::*;
        assert_eq!(
            outcomes(&v),
            [
                Rejected(RejectReason::SaleNotOpen),
                Confirmed,
                Confirmed,
                Rejected(RejectReason::SaleClosed),
                Confirmed,
            ],
            "the opening instant is in, the closing one out; a user refused early may come back"
        );
        assert_eq!(g[&1].booked, 3);
        assert_eq!(
            v.iter().map(|v| v.position).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), Some(4), Some(5)],
            "a rejection takes its turn like any decision"
        );
    }
}
