//! Model check: random sequences of bookings and cancels, pushed through the real
//! HTTP API and a real worker (which decides them in batches of whatever size the
//! timing gives), must end exactly as an in-memory model of the rules says: every
//! request's final status and reason, every promotion, the seats counted.
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
    free: i32,
    /// Every request's outcome so far, in order.
    outcomes: Vec<Want>,
    /// Each user's live booking: (index of its request, seats).
    live: HashMap<usize, (usize, i32)>,
    /// Waitlisted requests in order: (index, seats, user).
    waitlist: Vec<(usize, i32, usize)>,
}

impl Model {
    fn new(limit: i32) -> Self {
        Self {
            free: limit,
            outcomes: Vec::new(),
            live: HashMap::new(),
            waitlist: Vec::new(),
        }
    }

    fn book(&mut self, user: usize, quantity: i32) {
        let at = self.outcomes.len();
        let want = if self.live.contains_key(&user) {
            Want::rejected(RejectReason::AlreadyBooked)
        } else if quantity <= self.free {
            self.free -= quantity;
            self.live.insert(user, (at, quantity));
            Want::is("confirmed")
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
            self.free += seats;
        }
        self.waitlist.retain(|w| w.0 != booked);
        self.outcomes[booked].status = "cancelled";
        self.outcomes.push(Want::is("cancelled"));
        let free = &mut self.free;
        let outcomes = &mut self.outcomes;
        self.waitlist.retain(|&(at, seats, _)| {
            if seats > *free {
                return true;
            }
            *free -= seats;
            outcomes[at] = Want {
                status: "confirmed",
                reason: None,
                promoted: true,
            };
            false
        });
    }
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
async fn random_sequences_of_bookings_and_cancels_end_as_the_model_says() {
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

    let mut runs = Vec::new();
    let mut sent = 0;
    for seed in base..base + count {
        let mut rng = StdRng::seed_from_u64(seed);
        let limit = rng.random_range(1..=6);
        let max = rng.random_range(1..=limit.min(3));
        let goods = stack.create_goods(i64::from(limit), i64::from(max)).await;
        let mut model = Model::new(limit);
        let mut ids = Vec::new();
        for _ in 0..rng.random_range(50..=70) {
            let user = rng.random_range(0..USERS);
            let token = &users[user].1;
            if rng.random_bool(0.35) {
                ids.push(send(&stack, goods, token, None).await);
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
                ids.push(send(&stack, goods, token, Some(quantity)).await);
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
        runs.push((seed, goods, limit, model, ids));
    }
    stack
        .wait_for_decisions(i64::try_from(sent).expect("count"))
        .await;
    stack.wait_until_nothing_pending().await;

    for (seed, goods, limit, model, ids) in &runs {
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
        for (turn, (id, want)) in ids.iter().zip(&model.outcomes).enumerate() {
            assert_eq!(
                logged.get(id),
                Some(want),
                "{context}: request {} of the sequence",
                turn + 1
            );
        }
        let booked = limit - model.free;
        assert_eq!(stack.seats(*goods).await, (booked, *limit), "{context}");
        // The API answers as the log does (from Redis while the status lives).
        let last = ids.last().expect("a request");
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
        assert_eq!(
            polled["status"],
            model.outcomes.last().expect("outcome").status,
            "{context}"
        );
    }
}
