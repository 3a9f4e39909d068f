//! The decision rule, as a pure function over one batch.
//!
//! Requests are decided strictly in stream order, per goods.
//!
//! A **booking** is confirmed if the seats free at its turn cover its quantity,
//! otherwise waitlisted (a smaller later request may still fit after a larger one
//! waitlisted). A user who already holds a live booking or a waitlist place for the
//! goods is rejected `already_booked`; a goods that no longer exists gives
//! `goods_not_found`; a deleted user gives `user_not_found`; a quantity above the
//! goods' current `maxPerBooking` gives `invalid_quantity`; a request that arrived (its
//! stream entry time) before the goods' sale window opens or once it has closed gives
//! `sale_not_open` or `sale_closed`, whatever the API's cache let through.
//!
//! A booking that does not fit while the goods' waitlist holds its `waitlistLimit`
//! places is rejected `waitlist_full`.
//!
//! On a goods that holds seats (`hold_seconds` > 0) a booking that wins seats is
//! `held` instead of `confirmed`, until the stream entry time of the request whose
//! decision gave it the seats plus `hold_seconds`. A **confirm** of its user that
//! arrived before that deadline confirms it (`confirmed`); one that arrived later is
//! `hold_expired` and ends the hold; with no hold, `no_hold`. An **expire** (which the
//! shard's owner sends once a deadline has passed) ends its user's hold if it arrived
//! at or after the deadline (`expired`; `hold_not_due` before, `no_hold` without one).
//!
//! A **cancel** releases its user's live booking of the goods (`cancelled`), or finds
//! none (`no_booking`). A **limit** change sets the goods' booking limit (`applied`),
//! unless its bookings hold more seats than the new limit (`limit_below_booked`).
//! The seats a cancel, a limit change or an ended hold frees go at once to the
//! waitlist in decision order (as holds, on a goods that holds seats): every
//! waitlisted booking that fits the seats free when its turn in the waitlist comes is
//! promoted (the fit rule of first decisions). So a waitlisted booking is never passed
//! by a later request while seats it fits are free: after every decision, no
//! waitlisted booking fits the free seats.
//!
//! Keeping this free of I/O lets the rule be tested exhaustively without a database.

use std::collections::{BTreeMap, HashMap, HashSet};

use shared::decision::{BookingStatus, Decision, RejectReason, RequestKind};
use uuid::Uuid;

/// Seats and order state of one goods, read under its row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoodsState {
    pub booking_limit: i32,
    pub booked: i32,
    /// Waitlisted bookings, and how many there may be (`None`: no cap).
    pub waitlisted: i32,
    pub waitlist_limit: Option<i32>,
    /// How long a hold lasts, ms; 0: seats are confirmed at once.
    pub hold_ms: i64,
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
    pub request_id: Uuid,
    pub kind: RequestKind,
    pub goods_id: i64,
    pub user_id: i64,
    /// Seats asked for (0 for a cancel; the new limit for a limit change).
    pub quantity: i32,
    /// When it arrived: its stream entry's time, Unix milliseconds.
    pub arrived_ms: i64,
}

/// A booking the batch may touch, as read (live places of the batch's users, the
/// heads of the waitlists a cancel may promote from) or as made by the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booking {
    /// The booking request that made it: its identity until it has a row id.
    pub request_id: Uuid,
    /// Its row; `None` when this batch makes it.
    pub booking_id: Option<i64>,
    pub goods_id: i64,
    pub user_id: i64,
    pub quantity: i32,
    /// Its request's turn: the waitlist is served in this order.
    pub position: i64,
    pub status: BookingStatus,
    /// When it was promoted from the waitlist, Unix milliseconds.
    pub promoted_at_ms: Option<i64>,
    /// The request whose decision freed the seats it was promoted to.
    pub promoted_by: Option<Uuid>,
    /// The cancel request that released it.
    pub cancelled_by: Option<Uuid>,
    /// Its hold deadline, Unix milliseconds, if it got seats as a hold.
    pub hold_expires_at_ms: Option<i64>,
    /// The confirm or expire request that ended its hold.
    pub hold_ended_by: Option<Uuid>,
}

/// The verdict on one request, its place in its goods' decision order (`None` when
/// the goods does not exist), the booking it made (a booking) or released (a
/// cancel), by request id, and the limit an applied limit change replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub position: Option<i64>,
    pub booking: Option<Uuid>,
    pub limit_before: Option<i32>,
}

/// What a batch decided: a verdict per ask, and every booking it made or changed in
/// its final state (one made and then cancelled or promoted within the batch is
/// there once, as it ends).
#[derive(Debug, Default)]
pub struct Decided {
    pub verdicts: Vec<Verdict>,
    /// Bookings made by the batch (`booking_id: None`) and bookings read that it
    /// changed, by request id.
    pub bookings: HashMap<Uuid, Booking>,
}

/// Most seats one booking holds (the API's `maxPerBooking` ceiling; a database CHECK).
pub const MAX_QUANTITY: i32 = 100;

/// How much of a goods' waitlist a batch with `cancels` cancels and limit changes up
/// to `top_limit` (the goods' limit when it has none) may promote from, per quantity:
/// `(quantity, how many of the first waitlisted with that quantity)`. `largest` is
/// the most seats one cancel can release: the largest of the goods' `maxPerBooking`
/// (what a booking made in the batch holds at most) and the quantities of the live
/// bookings read for the batch's users.
///
/// The seats free at any moment of the batch are at most the highest limit it sees
/// less the seats booked now, plus what each cancel releases (only a cancel lowers
/// the seats booked); each promotion of quantity q takes q of them, and waitlisted
/// bookings of one quantity are promoted in their order. So no promotion ever reaches
/// past the first `seats / q` of quantity q, plus one for every waitlisted booking a
/// cancel may take out ahead of them.
pub fn waitlist_heads(
    state: &GoodsState,
    cancels: usize,
    largest: i32,
    top_limit: i32,
) -> Vec<(i32, i64)> {
    let cancels = i64::try_from(cancels).unwrap_or(i64::MAX);
    let seats = i64::from(top_limit.max(state.booking_limit) - state.booked).max(0)
        + cancels.saturating_mul(i64::from(largest.clamp(1, MAX_QUANTITY)));
    (1..=MAX_QUANTITY)
        .take_while(|q| i64::from(*q) <= seats)
        .map(|q| (q, seats / i64::from(q) + cancels))
        .collect()
}

/// Decides `asks` in order. `goods` is updated in place (seats taken, decisions
/// counted) so the caller can write the new counters; `read` holds the bookings read
/// for the batch (see [`Booking`]); `live_users` the batch's users that still exist;
/// `now_ms` is the time a promotion records.
pub fn decide(
    asks: &[Ask],
    goods: &mut HashMap<i64, GoodsState>,
    read: &[Booking],
    live_users: &HashSet<i64>,
    now_ms: i64,
) -> Decided {
    let mut board = Board::new(read, now_ms);
    let verdicts = asks
        .iter()
        .map(|ask| {
            let Some(state) = goods.get_mut(&ask.goods_id) else {
                return Verdict {
                    decision: Decision::Rejected(RejectReason::GoodsNotFound),
                    position: None,
                    booking: None,
                    limit_before: None,
                };
            };
            state.decided += 1;
            let position = state.decided;
            let limit_before = state.booking_limit;
            let (decision, booking) = match ask.kind {
                RequestKind::Book => board.book(ask, state, position, live_users),
                RequestKind::Cancel => board.cancel(ask, state),
                RequestKind::Limit => (board.limit(ask, state), None),
                RequestKind::Confirm => board.confirm(ask, state),
                RequestKind::Expire => board.expire(ask, state),
            };
            Verdict {
                decision,
                position: Some(position),
                booking,
                limit_before: (decision == Decision::Applied).then_some(limit_before),
            }
        })
        .collect();
    Decided {
        verdicts,
        bookings: board
            .bookings
            .into_iter()
            .filter(|(id, b)| board.read.get(id) != Some(b))
            .collect(),
    }
}

/// The bookings of a batch as it is being decided.
struct Board {
    /// As read, to tell what changed.
    read: HashMap<Uuid, Booking>,
    /// Now, by request id.
    bookings: HashMap<Uuid, Booking>,
    /// Each user's live booking of a goods.
    live: HashMap<(i64, i64), Uuid>,
    /// Each goods' waitlist (as far as read), by position.
    waitlists: HashMap<i64, BTreeMap<i64, Uuid>>,
    now_ms: i64,
}

impl Board {
    fn new(read: &[Booking], now_ms: i64) -> Self {
        let mut board = Self {
            read: read.iter().map(|b| (b.request_id, *b)).collect(),
            bookings: HashMap::new(),
            live: HashMap::new(),
            waitlists: HashMap::new(),
            now_ms,
        };
        board.bookings = board.read.clone();
        for b in read {
            board.place(b);
        }
        board
    }

    /// Indexes a live booking.
    fn place(&mut self, b: &Booking) {
        match b.status {
            BookingStatus::Confirmed | BookingStatus::Held => {}
            BookingStatus::Waitlisted => {
                self.waitlists
                    .entry(b.goods_id)
                    .or_default()
                    .insert(b.position, b.request_id);
            }
            BookingStatus::Cancelled | BookingStatus::Expired => return,
        }
        self.live.insert((b.goods_id, b.user_id), b.request_id);
    }

    fn book(
        &mut self,
        ask: &Ask,
        state: &mut GoodsState,
        position: i64,
        live_users: &HashSet<i64>,
    ) -> (Decision, Option<Uuid>) {
        let decision = if state.sale_opens_ms.is_some_and(|at| ask.arrived_ms < at) {
            Decision::Rejected(RejectReason::SaleNotOpen)
        } else if state.sale_closes_ms.is_some_and(|at| ask.arrived_ms >= at) {
            Decision::Rejected(RejectReason::SaleClosed)
        } else if !live_users.contains(&ask.user_id) {
            Decision::Rejected(RejectReason::UserNotFound)
        } else if ask.quantity < 1 || ask.quantity > state.max_per_booking {
            Decision::Rejected(RejectReason::InvalidQuantity)
        } else if self.live.contains_key(&(ask.goods_id, ask.user_id)) {
            Decision::Rejected(RejectReason::AlreadyBooked)
        } else if state.booking_limit - state.booked >= ask.quantity {
            state.booked += ask.quantity;
            if state.hold_ms > 0 {
                Decision::Held
            } else {
                Decision::Confirmed
            }
        } else if state
            .waitlist_limit
            .is_some_and(|cap| state.waitlisted >= cap)
        {
            Decision::Rejected(RejectReason::WaitlistFull)
        } else {
            state.waitlisted += 1;
            Decision::Waitlisted
        };
        let Some(status) = decision.booking() else {
            return (decision, None);
        };
        let booking = Booking {
            request_id: ask.request_id,
            booking_id: None,
            goods_id: ask.goods_id,
            user_id: ask.user_id,
            quantity: ask.quantity,
            position,
            status,
            promoted_at_ms: None,
            promoted_by: None,
            cancelled_by: None,
            hold_expires_at_ms: (status == BookingStatus::Held)
                .then(|| self.hold_until(ask, state)),
            hold_ended_by: None,
        };
        self.place(&booking);
        self.bookings.insert(ask.request_id, booking);
        (decision, Some(ask.request_id))
    }

    fn cancel(&mut self, ask: &Ask, state: &mut GoodsState) -> (Decision, Option<Uuid>) {
        let released = self
            .live
            .remove(&(ask.goods_id, ask.user_id))
            .and_then(|id| self.bookings.get_mut(&id));
        let Some(booking) = released else {
            return (Decision::Rejected(RejectReason::NoBooking), None);
        };
        match booking.status {
            BookingStatus::Confirmed | BookingStatus::Held => state.booked -= booking.quantity,
            BookingStatus::Waitlisted => {
                state.waitlisted -= 1;
                if let Some(waitlist) = self.waitlists.get_mut(&ask.goods_id) {
                    waitlist.remove(&booking.position);
                }
            }
            BookingStatus::Cancelled | BookingStatus::Expired => {}
        }
        booking.status = BookingStatus::Cancelled;
        booking.cancelled_by = Some(ask.request_id);
        let released = booking.request_id;
        self.promote(ask, state);
        (Decision::Cancelled, Some(released))
    }

    /// The deadline of a hold that the decision on `by` makes: `hold_ms` from when
    /// `by` arrived (its stream entry time), or from now when it waited in the queue
    /// longer than that (a backlog must not eat into the hold).
    fn hold_until(&self, by: &Ask, state: &GoodsState) -> i64 {
        by.arrived_ms.max(self.now_ms).saturating_add(state.hold_ms)
    }

    /// The user's held booking of the goods, if its place is a hold.
    fn hold_of(&self, ask: &Ask) -> Option<Booking> {
        let id = self.live.get(&(ask.goods_id, ask.user_id))?;
        self.bookings
            .get(id)
            .filter(|b| b.status == BookingStatus::Held)
            .copied()
    }

    /// Confirms the user's hold if the confirm arrived before its deadline; a later
    /// one ends the hold as its expiry would have.
    fn confirm(&mut self, ask: &Ask, state: &mut GoodsState) -> (Decision, Option<Uuid>) {
        let Some(hold) = self.hold_of(ask) else {
            return (Decision::Rejected(RejectReason::NoHold), None);
        };
        if ask.arrived_ms < hold.hold_expires_at_ms.unwrap_or(i64::MAX) {
            if let Some(b) = self.bookings.get_mut(&hold.request_id) {
                b.status = BookingStatus::Confirmed;
                b.hold_ended_by = Some(ask.request_id);
            }
            return (Decision::Confirmed, Some(hold.request_id));
        }
        self.end_hold(&hold, ask, state);
        (
            Decision::Rejected(RejectReason::HoldExpired),
            Some(hold.request_id),
        )
    }

    /// Ends the user's hold if the expiry arrived at or after its deadline.
    fn expire(&mut self, ask: &Ask, state: &mut GoodsState) -> (Decision, Option<Uuid>) {
        let Some(hold) = self.hold_of(ask) else {
            return (Decision::Rejected(RejectReason::NoHold), None);
        };
        if ask.arrived_ms < hold.hold_expires_at_ms.unwrap_or(i64::MAX) {
            return (Decision::Rejected(RejectReason::HoldNotDue), None);
        }
        self.end_hold(&hold, ask, state);
        (Decision::Expired, Some(hold.request_id))
    }

    /// A hold `by` ends unconfirmed: its seats go back, to the waitlist first.
    fn end_hold(&mut self, hold: &Booking, by: &Ask, state: &mut GoodsState) {
        self.live.remove(&(hold.goods_id, hold.user_id));
        if let Some(b) = self.bookings.get_mut(&hold.request_id) {
            b.status = BookingStatus::Expired;
            b.hold_ended_by = Some(by.request_id);
        }
        state.booked -= hold.quantity;
        self.promote(by, state);
    }

    /// Sets the goods' booking limit, unless its bookings hold more seats than that;
    /// `maxPerBooking` stays at most the limit (the API checks that too, but a change of
    /// `maxPerBooking` may have come in since this one was checked).
    fn limit(&mut self, ask: &Ask, state: &mut GoodsState) -> Decision {
        if ask.quantity < state.booked {
            return Decision::Rejected(RejectReason::LimitBelowBooked);
        }
        state.booking_limit = ask.quantity;
        state.max_per_booking = state.max_per_booking.min(ask.quantity);
        self.promote(ask, state);
        Decision::Applied
    }

    /// Gives the free seats to the goods' waitlist in order: each waitlisted booking
    /// that fits the seats free at its turn is confirmed (held, on a goods that holds
    /// seats: see [`Board::hold_until`]), promoted `by` the request that freed the seats.
    fn promote(&mut self, by: &Ask, state: &mut GoodsState) {
        let hold_until = (state.hold_ms > 0).then(|| self.hold_until(by, state));
        let Some(waitlist) = self.waitlists.get_mut(&by.goods_id) else {
            return;
        };
        let bookings = &mut self.bookings;
        let now_ms = self.now_ms;
        waitlist.retain(|_, request_id| {
            let free = state.booking_limit - state.booked;
            let Some(b) = bookings.get_mut(request_id) else {
                return false;
            };
            if free <= 0 || b.quantity > free {
                return true;
            }
            state.booked += b.quantity;
            state.waitlisted -= 1;
            b.status = if hold_until.is_some() {
                BookingStatus::Held
            } else {
                BookingStatus::Confirmed
            };
            b.hold_expires_at_ms = hold_until;
            b.promoted_at_ms = Some(now_ms);
            b.promoted_by = Some(by.request_id);
            false
        });
    }
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
                waitlisted: 0,
                waitlist_limit: None,
                hold_ms: 0,
                max_per_booking,
                decided: 0,
                sale_opens_ms: None,
                sale_closes_ms: None,
            },
        )])
    }

    fn ask(user_id: i64, quantity: i32) -> Ask {
        Ask {
            request_id: Uuid::new_v4(),
            kind: RequestKind::Book,
            goods_id: 1,
            user_id,
            quantity,
            arrived_ms: 1_000,
        }
    }

    fn cancel(user_id: i64) -> Ask {
        Ask {
            kind: RequestKind::Cancel,
            ..ask(user_id, 0)
        }
    }

    /// `user`'s request of `kind` (no quantity) arriving at `arrived_ms`.
    fn about(kind: RequestKind, user_id: i64, arrived_ms: i64) -> Ask {
        Ask {
            kind,
            arrived_ms,
            ..ask(user_id, 0)
        }
    }

    /// The organizer (user 1000) sets the limit to `to`.
    fn set_limit(to: i32) -> Ask {
        Ask {
            kind: RequestKind::Limit,
            ..ask(1000, to)
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
        let v = decide(&asks, &mut g, &[], &users(4), 0).verdicts;
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
        let v = decide(&asks, &mut g, &[], &users(4), 0).verdicts;
        use Decision::*;
        assert_eq!(outcomes(&v), [Confirmed, Waitlisted, Confirmed, Waitlisted]);
        assert_eq!(g[&1].booked, 5);
    }

    #[test]
    fn a_second_request_of_the_same_user_is_already_booked_even_after_a_waitlist() {
        let mut g = goods(1, 1);
        let asks = [ask(1, 1), ask(2, 1), ask(1, 1), ask(2, 1)];
        let v = decide(&asks, &mut g, &[], &users(2), 0).verdicts;
        use Decision::*;
        let dup = Rejected(RejectReason::AlreadyBooked);
        assert_eq!(outcomes(&v), [Confirmed, Waitlisted, dup, dup]);
    }

    #[test]
    fn held_places_from_earlier_batches_count() {
        let mut g = goods(10, 1);
        let held = Booking {
            request_id: Uuid::new_v4(),
            booking_id: Some(3),
            goods_id: 1,
            user_id: 7,
            quantity: 1,
            position: 1,
            status: BookingStatus::Waitlisted,
            promoted_at_ms: None,
            promoted_by: None,
            cancelled_by: None,
            hold_expires_at_ms: None,
            hold_ended_by: None,
        };
        let v = decide(&[ask(7, 1)], &mut g, &[held], &users(7), 0).verdicts;
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
                ..ask(1, 1)
            },
            ask(5, 1),
            ask(1, 3),
        ];
        let v = decide(&asks, &mut g, &[], &users(2), 0).verdicts;
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
        let v = decide(&asks, &mut g, &[], &users(4), 0).verdicts;
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

    fn statuses(d: &Decided, ids: &[Uuid]) -> Vec<Option<BookingStatus>> {
        ids.iter()
            .map(|id| d.bookings.get(id).map(|b| b.status))
            .collect()
    }

    #[test]
    fn a_cancel_promotes_exactly_the_waitlisted_that_fit_in_order() {
        // 10 seats sold out (a 2-seat booking among them), then a waitlist asking
        // 3, 1, 2, 1, 1; the 2-seat booking cancels.
        let mut g = goods(10, 4);
        let mut asks = vec![ask(1, 2), ask(2, 4), ask(3, 4)];
        let waitlist: Vec<Ask> = [3, 1, 2, 1, 1]
            .iter()
            .zip(10..)
            .map(|(q, user)| ask(user, *q))
            .collect();
        asks.extend(&waitlist);
        asks.push(cancel(1));
        let d = decide(&asks, &mut g, &[], &users(20), 77);
        use Decision::*;
        assert_eq!(
            outcomes(&d.verdicts),
            [
                Confirmed, Confirmed, Confirmed, Waitlisted, Waitlisted, Waitlisted, Waitlisted,
                Waitlisted, Cancelled
            ]
        );
        let ids: Vec<Uuid> = waitlist.iter().map(|a| a.request_id).collect();
        use BookingStatus as S;
        assert_eq!(
            statuses(&d, &ids),
            [
                Some(S::Waitlisted),
                Some(S::Confirmed),
                Some(S::Waitlisted),
                Some(S::Confirmed),
                Some(S::Waitlisted)
            ],
            "2 seats free: 3 does not fit, 1 does, 2 no longer does, 1 does, none left"
        );
        assert_eq!(d.bookings[&ids[1]].promoted_at_ms, Some(77));
        assert_eq!(d.bookings[&ids[1]].promoted_by, Some(asks[8].request_id));
        assert_eq!(d.bookings[&ids[0]].promoted_at_ms, None);
        assert_eq!(g[&1].booked, 10);
        let released = &d.bookings[&asks[0].request_id];
        assert_eq!(released.status, S::Cancelled);
        assert_eq!(released.cancelled_by, Some(asks[8].request_id));
        assert_eq!(d.verdicts[8].booking, Some(asks[0].request_id));
        assert_eq!(d.verdicts[8].position, Some(9), "a cancel takes a turn");
    }

    #[test]
    fn a_cancel_without_a_live_booking_is_no_booking_and_a_user_may_book_again_after_one() {
        let mut g = goods(1, 1);
        let asks = [cancel(1), ask(1, 1), cancel(1), cancel(1), ask(1, 1)];
        let d = decide(&asks, &mut g, &[], &users(1), 0);
        use Decision::*;
        let none = Rejected(RejectReason::NoBooking);
        assert_eq!(
            outcomes(&d.verdicts),
            [none, Confirmed, Cancelled, none, Confirmed]
        );
        assert_eq!(g[&1].booked, 1);
        assert_eq!(
            d.bookings[&asks[1].request_id].status,
            BookingStatus::Cancelled
        );
        assert_eq!(
            d.bookings[&asks[4].request_id].status,
            BookingStatus::Confirmed
        );
    }

    #[test]
    fn cancelling_a_waitlist_place_frees_no_seat_and_a_later_one_keeps_its_order() {
        let mut g = goods(1, 1);
        let asks = [ask(1, 1), ask(2, 1), ask(3, 1), cancel(2), cancel(1)];
        let d = decide(&asks, &mut g, &[], &users(3), 0);
        assert_eq!(
            d.bookings[&asks[1].request_id].status,
            BookingStatus::Cancelled
        );
        assert_eq!(
            d.bookings[&asks[2].request_id].status,
            BookingStatus::Confirmed,
            "the seat user 1 released went to user 3, next in line once user 2 left"
        );
        assert_eq!(g[&1].booked, 1);
    }

    #[test]
    fn a_raised_limit_promotes_the_waitlisted_that_fit_in_order_and_a_limit_below_booked_is_refused(
    ) {
        let mut g = goods(4, 3);
        let asks = [
            ask(1, 3),
            ask(2, 3),
            ask(3, 1),
            ask(4, 2),
            ask(5, 1),
            set_limit(3),
            set_limit(6),
            set_limit(4),
            set_limit(6),
        ];
        let d = decide(&asks, &mut g, &[], &users(5), 5);
        use Decision::*;
        let below = Rejected(RejectReason::LimitBelowBooked);
        assert_eq!(
            outcomes(&d.verdicts),
            [
                Confirmed, Waitlisted, Confirmed, Waitlisted, Waitlisted, below, Applied, below,
                Applied
            ]
        );
        let ids: Vec<Uuid> = asks[1..5].iter().map(|a| a.request_id).collect();
        use BookingStatus as S;
        assert_eq!(
            statuses(&d, &ids),
            [
                Some(S::Waitlisted),
                Some(S::Confirmed),
                Some(S::Confirmed),
                Some(S::Waitlisted)
            ],
            "2 seats freed: the 3-seat request does not fit, the 2-seat one does, none is left"
        );
        assert_eq!(g[&1].booking_limit, 6);
        assert_eq!(g[&1].booked, 6);
        assert_eq!(g[&1].waitlisted, 2);
        assert_eq!(d.verdicts[6].limit_before, Some(4));
        assert_eq!(d.verdicts[8].limit_before, Some(6));
        assert_eq!(d.verdicts[5].limit_before, None);
        assert_eq!(d.bookings[&ids[2]].promoted_by, Some(asks[6].request_id));
    }

    #[test]
    fn a_full_waitlist_refuses_what_does_not_fit_until_a_place_frees() {
        let mut g = goods(1, 1);
        if let Some(state) = g.get_mut(&1) {
            state.waitlist_limit = Some(1);
        }
        let asks = [ask(1, 1), ask(2, 1), ask(3, 1), cancel(2), ask(4, 1)];
        let d = decide(&asks, &mut g, &[], &users(4), 0);
        use Decision::*;
        assert_eq!(
            outcomes(&d.verdicts),
            [
                Confirmed,
                Waitlisted,
                Rejected(RejectReason::WaitlistFull),
                Cancelled,
                Waitlisted
            ]
        );
        assert_eq!(g[&1].waitlisted, 1);
    }

    #[test]
    fn holds_are_confirmed_before_their_deadline_and_expire_at_it_giving_their_seats_in_order() {
        let mut g = goods(2, 1);
        if let Some(state) = g.get_mut(&1) {
            state.hold_ms = 1_000;
        }
        let at = |user_id, arrived_ms| Ask {
            arrived_ms,
            ..ask(user_id, 1)
        };
        use RequestKind::{Cancel, Confirm, Expire};
        let asks = [
            at(1, 100),
            at(2, 200),
            at(3, 300),
            at(4, 300),
            about(Confirm, 1, 1_099),
            about(Confirm, 2, 1_200),
            about(Expire, 3, 2_199),
            about(Expire, 3, 2_200),
            about(Confirm, 1, 2_300),
            about(Expire, 5, 2_300),
            about(Cancel, 4, 2_400),
        ];
        let d = decide(&asks, &mut g, &[], &users(5), 9);
        use Decision::*;
        assert_eq!(
            outcomes(&d.verdicts),
            [
                Held,
                Held,
                Waitlisted,
                Waitlisted,
                Confirmed,
                Rejected(RejectReason::HoldExpired),
                Rejected(RejectReason::HoldNotDue),
                Expired,
                Rejected(RejectReason::NoHold),
                Rejected(RejectReason::NoHold),
                Cancelled,
            ]
        );
        let b = |i: usize| d.bookings[&asks[i].request_id];
        use BookingStatus as S;
        assert_eq!(
            (0..4).map(|i| b(i).status).collect::<Vec<_>>(),
            [S::Confirmed, S::Expired, S::Expired, S::Cancelled]
        );
        assert_eq!(b(0).hold_expires_at_ms, Some(1_100));
        assert_eq!(b(0).hold_ended_by, Some(asks[4].request_id));
        assert_eq!(
            b(1).hold_ended_by,
            Some(asks[5].request_id),
            "the late confirm ended it"
        );
        // Promoted as holds, from the arrival of what freed the seat.
        assert_eq!(b(2).promoted_by, Some(asks[5].request_id));
        assert_eq!(b(2).hold_expires_at_ms, Some(2_200));
        assert_eq!(b(3).promoted_by, Some(asks[7].request_id));
        assert_eq!(b(3).hold_expires_at_ms, Some(3_200));
        assert_eq!(d.verdicts[5].booking, Some(asks[1].request_id));
        assert_eq!(d.verdicts[7].booking, Some(asks[2].request_id));
        assert_eq!(g[&1].booked, 1, "user 1's confirmed seat");
        assert_eq!(g[&1].waitlisted, 0);
    }

    #[test]
    fn a_hold_decided_after_a_long_wait_in_the_queue_lasts_its_full_time_from_the_decision() {
        let mut g = goods(1, 1);
        if let Some(state) = g.get_mut(&1) {
            state.hold_ms = 1_000;
        }
        let late = Ask {
            arrived_ms: 100,
            ..ask(1, 1)
        };
        let d = decide(&[late], &mut g, &[], &users(1), 5_000);
        assert_eq!(d.verdicts[0].decision, Decision::Held);
        assert_eq!(
            d.bookings[&late.request_id].hold_expires_at_ms,
            Some(6_000),
            "from the decision (5 s), not from the arrival (0.1 s)"
        );
    }

    #[test]
    fn bookings_read_and_unchanged_are_not_reported() {
        let mut g = goods(2, 1);
        let read = [Booking {
            request_id: Uuid::new_v4(),
            booking_id: Some(5),
            goods_id: 1,
            user_id: 9,
            quantity: 1,
            position: 1,
            status: BookingStatus::Confirmed,
            promoted_at_ms: None,
            promoted_by: None,
            cancelled_by: None,
            hold_expires_at_ms: None,
            hold_ended_by: None,
        }];
        if let Some(s) = g.get_mut(&1) {
            s.booked = 1;
        }
        let d = decide(&[ask(1, 1)], &mut g, &read, &users(9), 0);
        assert_eq!(d.bookings.len(), 1, "only the new booking");
        assert!(d.bookings.contains_key(&d.verdicts[0].booking.unwrap()));
    }

    /// The worker reads only part of a waitlist ([`waitlist_heads`]) and decides in
    /// batches; deciding a random sequence so must end exactly as deciding it in one
    /// batch that sees every booking.
    #[test]
    fn batches_reading_only_the_waitlist_heads_decide_as_one_batch_seeing_everything() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        for seed in 0..300_u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let limit = rng.random_range(1..=8);
            let max = rng.random_range(1..=4.min(limit));
            let cap = rng.random_bool(0.3).then(|| rng.random_range(0..4));
            let hold_ms = if rng.random_bool(0.5) {
                rng.random_range(1..=30)
            } else {
                0
            };
            let mut clock = 0;
            let asks: Vec<Ask> = (0..rng.random_range(10..60))
                .map(|_| {
                    let user = rng.random_range(1..=10);
                    clock += rng.random_range(0..=5);
                    let a = match rng.random_range(0..14) {
                        0..=2 => cancel(user),
                        3 => set_limit(rng.random_range(1..=12)),
                        4 | 5 => about(RequestKind::Confirm, user, 0),
                        6 | 7 => about(RequestKind::Expire, user, 0),
                        _ => ask(user, rng.random_range(1..=max)),
                    };
                    Ask {
                        arrived_ms: clock,
                        ..a
                    }
                })
                .collect();
            let start = || {
                let mut g = goods(limit, max);
                if let Some(state) = g.get_mut(&1) {
                    state.waitlist_limit = cap;
                    state.hold_ms = hold_ms;
                }
                g
            };

            let mut whole = start();
            let want = decide(&asks, &mut whole, &[], &users(10), 1);

            let mut g = start();
            let mut store: HashMap<Uuid, Booking> = HashMap::new();
            let mut verdicts = Vec::new();
            let mut next_id = 1;
            let mut rest = &asks[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(7));
                let (batch, later) = rest.split_at(n);
                rest = later;
                let pairs: HashSet<(i64, i64)> =
                    batch.iter().map(|a| (a.goods_id, a.user_id)).collect();
                let mut read: Vec<Booking> = store
                    .values()
                    .filter(|b| b.status.is_live() && pairs.contains(&(b.goods_id, b.user_id)))
                    .copied()
                    .collect();
                let cancels = batch
                    .iter()
                    .filter(|a| {
                        matches!(
                            a.kind,
                            RequestKind::Cancel | RequestKind::Confirm | RequestKind::Expire
                        )
                    })
                    .count();
                let limits: Vec<i32> = batch
                    .iter()
                    .filter(|a| a.kind == RequestKind::Limit)
                    .map(|a| a.quantity)
                    .collect();
                if cancels > 0 || !limits.is_empty() {
                    let largest = read.iter().map(|b| b.quantity).max().unwrap_or(0).max(max);
                    let top = limits.iter().copied().max().unwrap_or(0);
                    for (q, take) in waitlist_heads(&g[&1], cancels, largest, top) {
                        let mut queue: Vec<Booking> = store
                            .values()
                            .filter(|b| b.status == BookingStatus::Waitlisted && b.quantity == q)
                            .copied()
                            .collect();
                        queue.sort_by_key(|b| b.position);
                        for b in queue.into_iter().take(usize::try_from(take).unwrap()) {
                            if !read.iter().any(|r| r.request_id == b.request_id) {
                                read.push(b);
                            }
                        }
                    }
                }
                let d = decide(batch, &mut g, &read, &users(10), 1);
                verdicts.extend(d.verdicts);
                for (id, mut b) in d.bookings {
                    if b.booking_id.is_none() {
                        b.booking_id = Some(next_id);
                        next_id += 1;
                    }
                    store.insert(id, b);
                }
            }
            assert_eq!(verdicts, want.verdicts, "seed {seed}");
            assert_eq!(g, whole, "seed {seed}");
            for (id, b) in &want.bookings {
                let got = store.get(id).expect("booking made");
                assert_eq!(
                    (
                        got.status,
                        got.promoted_by,
                        got.cancelled_by,
                        got.hold_expires_at_ms,
                        got.hold_ended_by
                    ),
                    (
                        b.status,
                        b.promoted_by,
                        b.cancelled_by,
                        b.hold_expires_at_ms,
                        b.hold_ended_by
                    ),
                    "seed {seed}"
                );
            }
            assert_eq!(store.len(), want.bookings.len(), "seed {seed}");
        }
    }
}
