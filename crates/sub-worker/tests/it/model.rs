//! Model check: random sequences of bookings, cancels, confirms and booking limit
//! changes, on goods with or without a waitlist cap, with or without short seat holds
//! and with or without a sale that closes mid-sequence, pushed through the real HTTP API and a real worker (which decides them in
//! batches of whatever size the timing gives, and sends expiries for holds past their
//! deadline), must end exactly as an in-memory model of the rules says: every
//! request's final status and reason, every promotion and hold deadline, the seats and
//! places counted, the limit.
//!
//! The model replays the goods' stream: the requests the test sent, in the order sent
//! (one at a time, so that is stream order), with the expiries the worker sent between
//! them where the stream has them, each at its stream entry time (the time confirms
//! and expiries are judged by) and its decision's time (a hold lasts from the later of
//! the two). How soon expiries come is the worker's timing; what each decides is
//! checked. A booking the API refuses after the sale closed (409) is not sent; one it
//! let through is judged by its entry time against `saleClosesAt`, as the worker
//! judges it. Sequences on goods with holds now and then pause longer than a hold, so
//! that holds expire (and seats pass down the waitlist) between requests too.
//!
//! A lower limit is checked by the API against the seats booked as far as it can see,
//! so before one the test waits for the requests before it to be decided and expects
//! what the seats booked then say (goods with holds only get higher limits: expiries
//! may land at any moment). A limit at or above the last one is sent at once, into
//! batches with the requests before it.
//!
//! Each run checks `SEQUENCES` sequences of 50 to 70 operations from a random base
//! seed, printed on failure; `TICKETNEST_MODEL_SEED=<seed>` replays one sequence.

use std::{collections::HashMap, time::Duration};

use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use shared::decision::{DecisionRow, RejectReason, RequestKind};
use test_support::wait_until;
use uuid::Uuid;

use crate::helpers::{parts, spawn_stack_configured, Stack, SHARDS};

const SEQUENCES: u64 = 20;
const USERS: usize = 6;
/// The hold of goods that hold seats: short, so that some expire mid-sequence.
const HOLD_SECONDS: i64 = 1;

/// What a request must end as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    status: &'static str,
    reason: Option<&'static str>,
    promoted: bool,
    /// A booking's hold deadline, Unix ms.
    hold_until: Option<i64>,
}

impl Want {
    fn is(status: &'static str) -> Self {
        Self {
            status,
            reason: None,
            promoted: false,
            hold_until: None,
        }
    }

    fn rejected(reason: RejectReason) -> Self {
        Self {
            reason: Some(reason.as_str()),
            ..Self::is("rejected")
        }
    }
}

/// One request the test sent, in order.
#[derive(Debug, Clone, Copy)]
enum Op {
    Book {
        id: Uuid,
        user: i64,
        quantity: i32,
    },
    Cancel {
        id: Uuid,
        user: i64,
    },
    Confirm {
        id: Uuid,
        user: i64,
    },
    /// PATCH answers with the goods: matched to the log's limit rows in order.
    Limit {
        to: i32,
    },
}

/// The rules of one goods.
struct Model {
    limit: i32,
    booked: i32,
    cap: Option<usize>,
    hold_ms: i64,
    /// The sale's end, Unix ms.
    closes: Option<i64>,
    /// When the request being replayed arrived (its stream entry time), Unix ms.
    at: i64,
    /// When the request being replayed gives seats from: the later of its arrival
    /// and its decision, Unix ms.
    now: i64,
    wants: HashMap<Uuid, Want>,
    /// Each user's live booking: its request and seats.
    live: HashMap<i64, (Uuid, i32)>,
    /// Waitlisted requests in order: (request, seats).
    waitlist: Vec<(Uuid, i32)>,
}

impl Model {
    fn new(limit: i32, cap: Option<usize>, hold_ms: i64, closes: Option<i64>) -> Self {
        Self {
            limit,
            booked: 0,
            cap,
            hold_ms,
            closes,
            at: 0,
            now: 0,
            wants: HashMap::new(),
            live: HashMap::new(),
            waitlist: Vec::new(),
        }
    }

    /// A booking that gets seats now: held or confirmed.
    fn seated(&self, promoted: bool) -> Want {
        let mut want = Want::is("confirmed");
        want.promoted = promoted;
        if self.hold_ms > 0 {
            want.status = "held";
            want.hold_until = Some(self.now + self.hold_ms);
        }
        want
    }

    fn book(&mut self, id: Uuid, user: i64, quantity: i32) {
        let want = if self.closes.is_some_and(|closes| self.at >= closes) {
            Want::rejected(RejectReason::SaleClosed)
        } else if self.live.contains_key(&user) {
            Want::rejected(RejectReason::AlreadyBooked)
        } else if quantity <= self.limit - self.booked {
            self.booked += quantity;
            self.live.insert(user, (id, quantity));
            self.seated(false)
        } else if self.cap.is_some_and(|cap| self.waitlist.len() >= cap) {
            Want::rejected(RejectReason::WaitlistFull)
        } else {
            self.live.insert(user, (id, quantity));
            self.waitlist.push((id, quantity));
            Want::is("waitlisted")
        };
        self.wants.insert(id, want);
    }

    fn cancel(&mut self, id: Uuid, user: i64) {
        let Some((booked, seats)) = self.live.remove(&user) else {
            self.wants
                .insert(id, Want::rejected(RejectReason::NoBooking));
            return;
        };
        let was = &self.wants[&booked];
        if was.status != "waitlisted" {
            self.booked -= seats;
        }
        self.waitlist.retain(|w| w.0 != booked);
        if let Some(want) = self.wants.get_mut(&booked) {
            want.status = "cancelled";
        }
        self.wants.insert(id, Want::is("cancelled"));
        self.promote();
    }

    /// The user's hold: its request, seats and deadline.
    fn hold(&self, user: i64) -> Option<(Uuid, i32, i64)> {
        let (id, seats) = *self.live.get(&user)?;
        let want = &self.wants[&id];
        Some((
            id,
            seats,
            want.hold_until.filter(|_| want.status == "held")?,
        ))
    }

    fn confirm(&mut self, id: Uuid, user: i64, at: i64) {
        let want = match self.hold(user) {
            None => Want::rejected(RejectReason::NoHold),
            Some((held, _, until)) if at < until => {
                if let Some(w) = self.wants.get_mut(&held) {
                    w.status = "confirmed";
                }
                Want::is("confirmed")
            }
            Some((held, seats, _)) => {
                self.end_hold(user, held, seats);
                Want::rejected(RejectReason::HoldExpired)
            }
        };
        self.wants.insert(id, want);
    }

    fn expire(&mut self, id: Uuid, user: i64, at: i64) {
        let want = match self.hold(user) {
            None => Want::rejected(RejectReason::NoHold),
            Some((_, _, until)) if at < until => Want::rejected(RejectReason::HoldNotDue),
            Some((held, seats, _)) => {
                self.end_hold(user, held, seats);
                Want::is("expired")
            }
        };
        self.wants.insert(id, want);
    }

    fn end_hold(&mut self, user: i64, held: Uuid, seats: i32) {
        self.live.remove(&user);
        self.booked -= seats;
        if let Some(w) = self.wants.get_mut(&held) {
            w.status = "expired";
        }
        self.promote();
    }

    fn set_limit(&mut self, id: Uuid, to: i32) {
        let want = if to < self.booked {
            Want::rejected(RejectReason::LimitBelowBooked)
        } else {
            self.limit = to;
            self.promote();
            Want::is("applied")
        };
        self.wants.insert(id, want);
    }

    /// Free seats go to the waitlist in order.
    fn promote(&mut self) {
        let mut waitlist = std::mem::take(&mut self.waitlist);
        waitlist.retain(|&(id, seats)| {
            if seats > self.limit - self.booked {
                return true;
            }
            self.booked += seats;
            let seated = self.seated(true);
            self.wants.insert(id, seated);
            false
        });
        self.waitlist = waitlist;
    }
}

/// Changes the goods' booking limit as its organizer: `200`, or the API's 409 when
/// `refused`. Returns false when the answer was `202` (the worker took longer than
/// PATCH waits).
async fn set_limit(stack: &Stack, goods: i64, organizer: &str, to: i32, refused: bool) -> bool {
    let (status, body) = stack
        .patch_goods(goods, organizer, &serde_json::json!({ "bookingLimit": to }))
        .await;
    if !refused && status == StatusCode::ACCEPTED {
        return false;
    }
    let want = if refused {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    assert_eq!(status, want, "limit to {to}: {body}");
    true
}

/// Sends one request and returns its id (asserting the 202), or `None` for a booking
/// the API refused because the sale has closed.
async fn send(
    stack: &Stack,
    goods: i64,
    token: &str,
    kind: RequestKind,
    quantity: i32,
) -> Option<Uuid> {
    let path = format!("/api/goods/{goods}/bookings");
    let request = match kind {
        RequestKind::Book => stack
            .http
            .post(stack.url(&path))
            .json(&serde_json::json!({ "quantity": quantity })),
        RequestKind::Cancel => stack.http.delete(stack.url(&format!("{path}/me"))),
        _ => stack.http.post(stack.url(&format!("{path}/me/confirm"))),
    };
    let (status, body) = parts(request.bearer_auth(token).send().await.expect("send")).await;
    if kind == RequestKind::Book && status == StatusCode::CONFLICT {
        assert_eq!(body["error"]["code"], "sale_closed", "{body}");
        return None;
    }
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    Some(Uuid::try_parse(body["requestId"].as_str().expect("id")).expect("uuid"))
}

/// Waits until the test's own requests (every kind but the worker's expiries) number
/// `n` decided.
async fn wait_for_ours(stack: &Stack, n: usize) {
    let ours = || async {
        let client = stack.db.client().await;
        let row = client
            .query_one(
                "SELECT count(*) FROM booking_requests WHERE kind <> 'expire'",
                &[],
            )
            .await
            .expect("count");
        usize::try_from(row.get::<_, i64>(0)).expect("count")
    };
    wait_until(
        &format!("{n} requests decided"),
        Duration::from_secs(60),
        || async { ours().await >= n },
    )
    .await;
    assert_eq!(ours().await, n, "no more decisions than requests");
}

/// What the log says a request ended as.
fn logged(r: &DecisionRow) -> Want {
    let booking = r.kind == RequestKind::Book;
    Want {
        status: r.status_now().as_str(),
        reason: r.decision.reason().map(RejectReason::as_str),
        promoted: booking && r.promoted_at_s.is_some(),
        hold_until: r.hold_expires_at_ms.filter(|_| booking),
    }
}

/// Replays `ops` and the worker's expiries in the log's stream order (`decided_ms`:
/// each request's decision time, as the worker read it); returns the model and, in
/// order, every logged request with what the model wants of it.
fn replay(
    mut model: Model,
    ops: &[Op],
    rows: &[DecisionRow],
    decided_ms: &HashMap<Uuid, i64>,
) -> (Model, Vec<(Uuid, usize)>) {
    let mut order = Vec::new();
    let mut ops = ops.iter();
    for (turn, r) in rows.iter().enumerate() {
        let at = r.entry_id.ms;
        let id = r.request_id;
        model.at = at;
        model.now = at.max(decided_ms[&id]);
        order.push((id, turn));
        if r.kind == RequestKind::Expire {
            model.expire(id, r.user_id, at);
            continue;
        }
        let op = ops
            .next()
            .expect("the log holds no request the test did not send");
        match *op {
            Op::Book {
                id: want,
                user,
                quantity,
            } => {
                assert_eq!(id, want, "turn {turn}: another request than sent");
                model.book(id, user, quantity);
            }
            Op::Cancel { id: want, user } => {
                assert_eq!(id, want, "turn {turn}: another request than sent");
                model.cancel(id, user);
            }
            Op::Confirm { id: want, user } => {
                assert_eq!(id, want, "turn {turn}: another request than sent");
                model.confirm(id, user, at);
            }
            Op::Limit { to } => {
                assert_eq!(
                    r.kind,
                    RequestKind::Limit,
                    "turn {turn}: a limit change was due"
                );
                assert_eq!(r.quantity, to, "turn {turn}");
                model.set_limit(id, to);
            }
        }
    }
    assert!(ops.next().is_none(), "every request sent was decided");
    (model, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_of_bookings_cancels_confirms_and_limit_changes_end_as_the_model_says() {
    let replay_seed: Option<u64> = std::env::var("TICKETNEST_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let (base, count) = match replay_seed {
        Some(seed) => (seed, 1),
        None => (rand::random::<u64>() >> 1, SEQUENCES),
    };
    // No per-user budget: the sequences send far more than a person would.
    let stack = spawn_stack_configured(SHARDS, |c| c.http.user_rate = None).await;
    let users = stack.customers("model", USERS).await;
    let _worker = stack.worker(&[]);

    let (_, organizer) = stack.organizer().await;
    let mut runs = Vec::new();
    let mut sent = 0_usize;
    for seed in base..base + count {
        let mut rng = StdRng::seed_from_u64(seed);
        let limit = rng.random_range(3..=6);
        let max = rng.random_range(1..=3);
        let goods = stack
            .create_goods_as(&organizer, i64::from(limit), i64::from(max))
            .await;
        let cap = rng.random_bool(0.4).then(|| rng.random_range(0..3_usize));
        let holds = rng.random_bool(0.4);
        let mut change = serde_json::Map::new();
        if let Some(cap) = cap {
            change.insert("waitlistLimit".into(), cap.into());
        }
        if holds {
            change.insert("holdSeconds".into(), HOLD_SECONDS.into());
        }
        // A sale that closes partway through the sequence.
        let closes = rng
            .random_bool(0.3)
            .then(|| chrono::Utc::now().timestamp_millis() + rng.random_range(200..1_500));
        if let Some(closes) = closes {
            let at = chrono::DateTime::from_timestamp_millis(closes).expect("instant");
            change.insert(
                "saleClosesAt".into(),
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
        }
        let (status, body) = stack.patch_goods(goods, &organizer, &change.into()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut ops = Vec::new();
        // The last limit set, and whether a change was answered 202 (still queued).
        let (mut last_limit, mut lagging) = (limit, false);
        for _ in 0..rng.random_range(50..=70) {
            let user = rng.random_range(0..USERS);
            let (user_id, token) = (users[user].0, &users[user].1);
            let op = match rng.random_range(0..100) {
                0..=7 => {
                    // maxPerBooking stays within every limit: 3 at most.
                    let mut to = rng.random_range(3..=8);
                    if holds {
                        to = to.max(last_limit);
                    }
                    let mut refused = false;
                    if to < last_limit || lagging {
                        wait_for_ours(&stack, sent + ops.len()).await;
                        refused = to < stack.seats(goods).await.0;
                    }
                    lagging |= !set_limit(&stack, goods, &organizer, to, refused).await;
                    if replay_seed.is_some() {
                        eprintln!("limit to {to}: refused by the API {refused}");
                    }
                    if refused {
                        continue;
                    }
                    last_limit = to;
                    Op::Limit { to }
                }
                8..=37 => Op::Cancel {
                    id: send(&stack, goods, token, RequestKind::Cancel, 0)
                        .await
                        .expect("a cancel is taken"),
                    user: user_id,
                },
                38..=52 => Op::Confirm {
                    id: send(&stack, goods, token, RequestKind::Confirm, 0)
                        .await
                        .expect("a confirm is taken"),
                    user: user_id,
                },
                _ => {
                    let quantity = rng.random_range(1..=max);
                    let Some(id) = send(&stack, goods, token, RequestKind::Book, quantity).await
                    else {
                        assert!(closes.is_some(), "a refusal for a sale that never closes");
                        continue;
                    };
                    Op::Book {
                        id,
                        user: user_id,
                        quantity,
                    }
                }
            };
            if replay_seed.is_some() {
                eprintln!("{op:?}");
            }
            ops.push(op);
            if holds && rng.random_bool(0.02) {
                // Longer than a hold: the holds made so far lapse before the next
                // request (time passing is the point here, not a condition).
                tokio::time::sleep(Duration::from_millis(1_100)).await;
            }
        }
        sent += ops.len();
        let hold_ms = if holds { HOLD_SECONDS * 1000 } else { 0 };
        runs.push((seed, goods, Model::new(limit, cap, hold_ms, closes), ops));
    }
    wait_for_ours(&stack, sent).await;
    // Holds end by their deadline: wait until none is left, and everything is decided.
    wait_until("no hold left", Duration::from_secs(30), || async {
        stack.db.count("bookings WHERE status = 'held'").await == 0
    })
    .await;
    stack.wait_until_nothing_pending().await;

    let decided_ms: HashMap<Uuid, i64> = stack
        .db
        .client()
        .await
        .query(
            "SELECT request_id, floor(extract(epoch FROM decided_at) * 1000)::int8 \
             FROM booking_requests",
            &[],
        )
        .await
        .expect("decision times")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (seed, goods, model, ops) in runs {
        let context = format!("seed {seed} (replay with TICKETNEST_MODEL_SEED={seed})");
        let rows = stack.assert_invariants(goods).await;
        let (model, order) = replay(model, &ops, &rows, &decided_ms);
        for r in &rows {
            let word = r
                .decision
                .reason()
                .map_or(r.decision.status().as_str(), |w| w.as_str());
            *seen.entry(format!("{} {word}", r.kind)).or_default() += 1;
        }
        for (id, turn) in order {
            assert_eq!(
                Some(logged(&rows[turn])),
                model.wants.get(&id).cloned(),
                "{context}: turn {} ({:?})",
                turn + 1,
                rows[turn].kind
            );
        }
        assert_eq!(
            stack.seats(goods).await,
            (model.booked, model.limit),
            "{context}"
        );
        let waitlisted = stack
            .db
            .count(&format!(
                "bookings WHERE goods_id = {goods} AND status = 'waitlisted'"
            ))
            .await;
        assert_eq!(waitlisted, model.waitlist.len() as i64, "{context}");
        // The API answers as the log does (from Redis while the status lives).
        let (user, token) = &users[0];
        if let Some(r) = rows
            .iter()
            .rev()
            .find(|r| r.user_id == *user && r.kind == RequestKind::Book)
        {
            let polled = stack.status(r.request_id, token).await;
            assert_eq!(
                polled["status"], model.wants[&r.request_id].status,
                "{context}"
            );
        }
    }
    let mut seen: Vec<_> = seen.into_iter().collect();
    seen.sort();
    eprintln!("decisions checked, by kind and outcome: {seen:?}");
}
