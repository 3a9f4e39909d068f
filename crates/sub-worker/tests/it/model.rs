//! Model check: random sequences of bookings, cancels and booking limit changes, on
//! goods with or without a waitlist cap, pushed through the real HTTP API and a real
//! worker (which decides them in batches of whatever size the timing gives), must end
//! exactly as an in-memory model of the rules says: every request's final status and
//! reason, every promotion, the seats and places counted, the limit.
//!
//! A limit change waits for the goods' requests before it to be decided (PATCH
//! refuses a limit below the seats booked as far as it can see, which then is exactly
//! what the model sees); bookings and cancels are sent without waiting.
//!
//! Each run checks `SEQUENCES` sequences of 50 to 70 operations from a random base
//! seed, printed on failure; `TICKETNEST_MODEL_SEED=<seed>` replays one sequence.

use std::collections::HashMap;

use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use shared::decision::{RejectReason, RequestKind};
use uuid::Uuid;

use crate::helpers::{parts, spawn_stack_configured, Stack, SHARDS};

const SEQUENCES: u64 = 20;
const USERS: usize = 6;

/// What a request must end as: its status now, its reason, whether it was promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Want {
    status: &'static str,
    reason: Option<&'static str>,
    promoted: bool,
}

impl Want {
    fn is(status: &'static str) -> Self {
        Self {
            status,
            reason: None,
            promoted: false,
        }
    }

    fn rejected(reason: RejectReason) -> Self {
        Self {
            status: "rejected",
            reason: Some(reason.as_str()),
            promoted: false,
        }
    }
}

/// The rules of one goods, over requests in stream order.
struct Model {
    limit: i32,
    booked: i32,
    /// The waitlist cap, if any.
    cap: Option<usize>,
    /// Every request's outcome so far, in order.
    outcomes: Vec<Want>,
    /// Each user's live booking: (index of its request, seats).
    live: HashMap<usize, (usize, i32)>,
    /// Waitlisted requests in order: (index, seats, user).
    waitlist: Vec<(usize, i32, usize)>,
}

impl Model {
    fn new(limit: i32, cap: Option<usize>) -> Self {
        Self {
            limit,
            booked: 0,
            cap,
            outcomes: Vec::new(),
            live: HashMap::new(),
            waitlist: Vec::new(),
        }
    }

    fn book(&mut self, user: usize, quantity: i32) {
        let at = self.outcomes.len();
        let want = if self.live.contains_key(&user) {
            Want::rejected(RejectReason::AlreadyBooked)
        } else if quantity <= self.limit - self.booked {
            self.booked += quantity;
            self.live.insert(user, (at, quantity));
            Want::is("confirmed")
        } else if self.cap.is_some_and(|cap| self.waitlist.len() >= cap) {
            Want::rejected(RejectReason::WaitlistFull)
        } else {
            self.live.insert(user, (at, quantity));
            self.waitlist.push((at, quantity, user));
            Want::is("waitlisted")
        };
        self.outcomes.push(want);
    }

    fn cancel(&mut self, user: usize) {
        let Some((booked, seats)) = self.live.remove(&user) else {
            self.outcomes.push(Want::rejected(RejectReason::NoBooking));
            return;
        };
        if self.outcomes[booked].status == "confirmed" {
            self.booked -= seats;
        }
        self.waitlist.retain(|w| w.0 != booked);
        self.outcomes[booked].status = "cancelled";
        self.outcomes.push(Want::is("cancelled"));
        self.promote();
    }

    /// Whether a change of the limit to `to` is let through (the API refuses one
    /// below the seats booked, before the worker sees it), and if so its outcome.
    fn set_limit(&mut self, to: i32) -> bool {
        if to < self.booked {
            return false;
        }
        self.limit = to;
        self.outcomes.push(Want::is("applied"));
        self.promote();
        true
    }

    fn promote(&mut self) {
        let (limit, booked) = (self.limit, &mut self.booked);
        let outcomes = &mut self.outcomes;
        self.waitlist.retain(|&(at, seats, _)| {
            if seats > limit - *booked {
                return true;
            }
            *booked += seats;
            outcomes[at] = Want {
                status: "confirmed",
                reason: None,
                promoted: true,
            };
            false
        });
    }
}

/// Changes the goods' booking limit as its organizer: `200` when `applied` (or `202`
/// when the worker took longer than PATCH waits: returns `false` then), else the
/// API's 409.
async fn set_limit(stack: &Stack, goods: i64, organizer: &str, to: i32, applied: bool) -> bool {
    let (status, body) = stack
        .patch_goods(goods, organizer, &serde_json::json!({ "bookingLimit": to }))
        .await;
    if applied && status == StatusCode::ACCEPTED {
        return false;
    }
    let want = if applied {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    assert_eq!(status, want, "limit to {to}: {body}");
    true
}

/// Sends one request and returns its id (asserting the 202).
async fn send(stack: &Stack, goods: i64, token: &str, quantity: Option<i32>) -> Uuid {
    let request = match quantity {
        Some(q) => stack
            .http
            .post(stack.url(&format!("/api/goods/{goods}/bookings")))
            .json(&serde_json::json!({ "quantity": q })),
        None => stack
            .http
            .delete(stack.url(&format!("/api/goods/{goods}/bookings/me"))),
    };
    let (status, body) = parts(request.bearer_auth(token).send().await.expect("send")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    Uuid::try_parse(body["requestId"].as_str().expect("id")).expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_of_bookings_cancels_and_limit_changes_end_as_the_model_says() {
    let replay: Option<u64> = std::env::var("TICKETNEST_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let (base, count) = match replay {
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
        if let Some(cap) = cap {
            let (status, body) = stack
                .patch_goods(
                    goods,
                    &organizer,
                    &serde_json::json!({ "waitlistLimit": cap }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let mut model = Model::new(limit, cap);
        // The request id of each request; `None` for a limit change (PATCH answers
        // with the goods): those are matched to the log's limit rows in order.
        let mut ids: Vec<Option<Uuid>> = Vec::new();
        // A limit change was answered 202 (still queued).
        let mut lagging = false;
        for _ in 0..rng.random_range(50..=70) {
            let user = rng.random_range(0..USERS);
            let token = &users[user].1;
            if rng.random_bool(0.08) {
                // maxPerBooking stays within every limit: 3 at most.
                let to = rng.random_range(3..=8);
                // A limit at or above the last one passes the API's check whatever is
                // still queued, and is sent at once, into batches with the requests
                // before it. A lower one is checked against the seats booked as far as
                // the API can see: it waits for the requests before it first, so that
                // the API sees what the model does (and after a 202, every one does).
                if to < model.limit || lagging {
                    stack
                        .wait_for_decisions(i64::try_from(sent + ids.len()).expect("count"))
                        .await;
                }
                let applied = model.set_limit(to);
                lagging |= !set_limit(&stack, goods, &organizer, to, applied).await;
                if applied {
                    ids.push(None);
                }
                if replay.is_some() {
                    eprintln!("limit to {to}: applied {applied}");
                }
            } else if rng.random_bool(0.35) {
                ids.push(Some(send(&stack, goods, token, None).await));
                model.cancel(user);
                if replay.is_some() {
                    eprintln!(
                        "{} cancel by user {user}: {:?}",
                        ids.len(),
                        model.outcomes.last()
                    );
                }
            } else {
                let quantity = rng.random_range(1..=max);
                ids.push(Some(send(&stack, goods, token, Some(quantity)).await));
                model.book(user, quantity);
                if replay.is_some() {
                    eprintln!(
                        "{} booking of {quantity} by user {user}: {:?}",
                        ids.len(),
                        model.outcomes.last()
                    );
                }
            }
        }
        sent += ids.len();
        runs.push((seed, goods, model, ids));
    }
    stack
        .wait_for_decisions(i64::try_from(sent).expect("count"))
        .await;
    stack.wait_until_nothing_pending().await;

    for (seed, goods, model, ids) in &runs {
        let context = format!("seed {seed} (replay with TICKETNEST_MODEL_SEED={seed})");
        let rows = stack.assert_invariants(*goods).await;
        let logged: HashMap<Uuid, Want> = rows
            .iter()
            .map(|r| {
                let want = Want {
                    status: r.status_now().as_str(),
                    reason: r.decision.reason().map(RejectReason::as_str),
                    promoted: r.kind == RequestKind::Book && r.promoted_at_s.is_some(),
                };
                (r.request_id, want)
            })
            .collect();
        let mut limit_changes = rows
            .iter()
            .filter(|r| r.kind == RequestKind::Limit)
            .map(|r| r.request_id);
        for (turn, (id, want)) in ids.iter().zip(&model.outcomes).enumerate() {
            let id = id.or_else(|| limit_changes.next());
            assert_eq!(
                id.and_then(|id| logged.get(&id)),
                Some(want),
                "{context}: request {} of the sequence",
                turn + 1
            );
        }
        assert_eq!(
            limit_changes.next(),
            None,
            "{context}: no other limit change"
        );
        assert_eq!(
            ids.len(),
            rows.len(),
            "{context}: every request logged once"
        );
        assert_eq!(
            stack.seats(*goods).await,
            (model.booked, model.limit),
            "{context}"
        );
        // The API answers as the log does (from Redis while the status lives).
        let (at, last) = ids
            .iter()
            .enumerate()
            .rev()
            .find_map(|(at, id)| Some((at, id.as_ref()?)))
            .expect("a request");
        let owner = rows
            .iter()
            .find(|r| r.request_id == *last)
            .map(|r| r.user_id);
        let token = &users
            .iter()
            .find(|(id, _)| Some(*id) == owner)
            .expect("its user")
            .1;
        let polled = stack.status(last, token).await;
        assert_eq!(polled["status"], model.outcomes[at].status, "{context}");
    }
}
