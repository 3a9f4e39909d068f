//! The invariant checker: reads the decision log, the bookings and the goods, and
//! names every breach of TicketNest's invariants it finds.
//!
//! One checker serves every caller: the integration tests after each sale and the load
//! tool's correctness verdict (and, next, an operator's `verify` command). [`read`] takes the facts
//! from PostgreSQL; [`check`] is pure, so its rules are unit-tested on hand-made facts.
//!
//! What it checks, per goods (stream order is the order of entry ids):
//! * **oversell**: confirmed seats above the booking limit;
//! * **counters**: `booked_count` differs from the confirmed seats, or `decided_count`
//!   from the decisions logged;
//! * **one live place per user**: a user with two live bookings for one goods;
//! * **FIFO**: replaying the decision rule over the log in stream order gives another
//!   decision than the one logged (the confirmed set is not exactly the first requests
//!   that fit, a waitlisted request that fit, an `already_booked` for a user who held
//!   nothing), or positions that do not follow stream order;
//! * **bookings match decisions**: every live decision has its booking row, and every
//!   booking row a live decision;
//! * **exactly once**: one stream entry decided twice, or two decisions at one turn;
//! * given the requests a caller saw accepted: an accepted request left undecided, and a
//!   decision for a request never accepted.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio_postgres::{GenericClient, IsolationLevel};
use uuid::Uuid;

use crate::{
    decision::{BookingStatus, Decision, DecisionRow, RejectReason, RequestKind, RowError},
    error::SharedError,
    stream::EntryId,
};

/// What the checker reads of a goods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodsFacts {
    pub id: i64,
    pub booking_limit: i32,
    pub booked_count: i32,
    pub waitlisted_count: i32,
    pub decided_count: i64,
}

/// What the checker reads of a booking row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingFacts {
    pub id: i64,
    pub goods_id: i64,
    pub user_id: i64,
    pub request_id: Uuid,
    pub quantity: i32,
    pub status: BookingStatus,
    /// Whether it was promoted from the waitlist (`promoted_at` is set).
    pub promoted: bool,
    /// The cancel request that released it.
    pub cancel_request_id: Option<Uuid>,
    /// Its hold deadline, Unix milliseconds: set when it took seats as a hold.
    pub hold_expires_at_ms: Option<i64>,
    /// Whether its user (and the user who cancelled it, if any) exists: no foreign
    /// key says so since migration V11, rows are never deleted instead.
    pub users_exist: bool,
}

/// Everything the checker looks at, for some goods or all.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Ordered by goods, then stream order.
    pub decisions: Vec<DecisionRow>,
    pub goods: Vec<GoodsFacts>,
    pub bookings: Vec<BookingFacts>,
}

/// One breach of an invariant, named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Breach {
    #[error("goods {goods_id} oversold: {confirmed} seats confirmed for {limit}")]
    Oversold {
        goods_id: i64,
        confirmed: i64,
        limit: i64,
    },
    #[error("goods {goods_id}: {counter} is {stored} but the log and bookings say {actual}")]
    CounterMismatch {
        goods_id: i64,
        counter: &'static str,
        stored: i64,
        actual: i64,
    },
    #[error("goods {goods_id}: user {user_id} holds {count} live places")]
    TwoLivePlaces {
        goods_id: i64,
        user_id: i64,
        count: usize,
    },
    #[error(
        "goods {goods_id} out of FIFO order at turn {turn}: request {request_id} was {actual} \
         but {expected} was due ({seats_left} seats left at its turn)"
    )]
    OutOfOrder {
        goods_id: i64,
        turn: usize,
        request_id: Uuid,
        expected: String,
        actual: String,
        seats_left: i64,
    },
    #[error("goods {goods_id}: request {request_id} at turn {turn} has position {position:?}")]
    PositionOutOfOrder {
        goods_id: i64,
        turn: usize,
        request_id: Uuid,
        position: Option<i64>,
    },
    #[error("goods {goods_id}: request {request_id}: {problem}")]
    BookingMismatch {
        goods_id: i64,
        request_id: Uuid,
        problem: &'static str,
    },
    #[error("goods {goods_id}: {what} decided twice (requests {first} and {second})")]
    DecidedTwice {
        goods_id: i64,
        what: String,
        first: Uuid,
        second: Uuid,
    },
    #[error(
        "goods {goods_id}: the booking limit {what} is {stored:?} but the replay says {replayed}"
    )]
    LimitDiffers {
        goods_id: i64,
        /// `now` (the goods' limit) or `before <request id>` (what an applied limit
        /// change recorded it replaced).
        what: String,
        stored: Option<i64>,
        replayed: i64,
    },
    #[error("{count} accepted requests were never decided (e.g. {example})")]
    Undecided { count: usize, example: Uuid },
    #[error("{count} decisions for requests never accepted (e.g. {example})")]
    NeverAccepted { count: usize, example: Uuid },
}

/// Reads the facts for `goods` (every goods when `None`) through a client or inside a
/// transaction. Three statements: outside a REPEATABLE READ transaction they may see
/// three moments; [`snapshot`] reads them as one.
///
/// # Errors
/// The database is unreachable, or holds a value this build cannot read.
pub async fn read(
    client: &impl GenericClient,
    goods: Option<&[i64]>,
) -> Result<Facts, SharedError> {
    let unavailable = |e: tokio_postgres::Error| SharedError::DatabaseUnavailable(Box::new(e));
    let goods: Option<Vec<i64>> = goods.map(<[i64]>::to_vec);
    let decisions = client
        .query(
            &format!(
                "{} WHERE $1::int8[] IS NULL OR r.goods_id = ANY($1) \
                 ORDER BY r.goods_id, r.stream_ms, r.stream_seq",
                DecisionRow::SELECT
            ),
            &[&goods],
        )
        .await
        .map_err(unavailable)?
        .iter()
        .map(DecisionRow::from_row)
        .collect::<Result<Vec<_>, RowError>>()
        .map_err(|e| SharedError::UnreadableRow(Box::new(e)))?;
    let goods_rows = client
        .query(
            "SELECT id, booking_limit, booked_count, decided_count, waitlisted_count \
             FROM goods WHERE $1::int8[] IS NULL OR id = ANY($1) ORDER BY id",
            &[&goods],
        )
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| GoodsFacts {
            id: r.get(0),
            booking_limit: r.get(1),
            booked_count: r.get(2),
            decided_count: r.get(3),
            waitlisted_count: r.get(4),
        })
        .collect();
    let bookings = client
        .query(
            "SELECT id, goods_id, user_id, request_id, quantity, status, \
               promoted_at IS NOT NULL, cancel_request_id, \
               round(extract(epoch FROM hold_expires_at) * 1000)::int8, \
               EXISTS (SELECT 1 FROM users u WHERE u.id = b.user_id) \
                 AND (b.cancelled_by IS NULL \
                      OR EXISTS (SELECT 1 FROM users u WHERE u.id = b.cancelled_by)) \
             FROM bookings b \
             WHERE $1::int8[] IS NULL OR goods_id = ANY($1) ORDER BY id",
            &[&goods],
        )
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| {
            Ok(BookingFacts {
                id: r.get(0),
                goods_id: r.get(1),
                user_id: r.get(2),
                request_id: r.get(3),
                quantity: r.get(4),
                status: r.get::<_, &str>(5).parse()?,
                promoted: r.get(6),
                cancel_request_id: r.get(7),
                hold_expires_at_ms: r.get(8),
                users_exist: r.get(9),
            })
        })
        .collect::<Result<_, crate::decision::UnknownValue>>()
        .map_err(|e| SharedError::UnreadableRow(Box::new(e)))?;
    Ok(Facts {
        decisions,
        goods: goods_rows,
        bookings,
    })
}

/// Reads the facts for `goods` in one REPEATABLE READ, read-only transaction: one
/// snapshot, so a batch the worker commits meanwhile is seen whole or not at all.
///
/// # Errors
/// As [`read`].
pub async fn snapshot(
    client: &mut tokio_postgres::Client,
    goods: Option<&[i64]>,
) -> Result<Facts, SharedError> {
    let unavailable = |e: tokio_postgres::Error| SharedError::DatabaseUnavailable(Box::new(e));
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(unavailable)?;
    let facts = read(&tx, goods).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(facts)
}

/// Reads one snapshot of `goods` (every goods when `None`) and checks it; see
/// [`check`].
///
/// # Errors
/// As [`read`].
pub async fn audit(
    client: &mut tokio_postgres::Client,
    goods: Option<&[i64]>,
    accepted: Option<&HashSet<Uuid>>,
) -> Result<Vec<Breach>, SharedError> {
    Ok(check(&snapshot(client, goods).await?, accepted))
}

/// Every breach in `facts`. With `accepted` (the requests a caller saw answered 202,
/// for exactly the goods read), also requests left undecided and decisions nobody
/// asked for.
pub fn check(facts: &Facts, accepted: Option<&HashSet<Uuid>>) -> Vec<Breach> {
    let mut breaches = Vec::new();
    if let Some(accepted) = accepted {
        breaches.extend(check_accepted(&facts.decisions, accepted));
    }
    let mut by_goods: HashMap<i64, Vec<&DecisionRow>> = HashMap::new();
    for row in &facts.decisions {
        by_goods.entry(row.goods_id).or_default().push(row);
    }
    let mut bookings: HashMap<i64, Vec<&BookingFacts>> = HashMap::new();
    for booking in &facts.bookings {
        bookings.entry(booking.goods_id).or_default().push(booking);
    }
    for goods in &facts.goods {
        let mut rows = by_goods.remove(&goods.id).unwrap_or_default();
        rows.sort_by_key(|r| r.entry_id);
        let goods_bookings = bookings.remove(&goods.id).unwrap_or_default();
        breaches.extend(check_goods(goods, &rows, &goods_bookings));
    }
    // No foreign key holds these since migration V11 (rows are never deleted instead).
    let mut orphans: Vec<(i64, Uuid, &'static str)> = bookings
        .values()
        .flatten()
        .map(|b| {
            (
                b.goods_id,
                b.request_id,
                "booking of a goods that does not exist",
            )
        })
        .chain(facts.bookings.iter().filter(|b| !b.users_exist).map(|b| {
            (
                b.goods_id,
                b.request_id,
                "booking of a user that does not exist",
            )
        }))
        .collect();
    orphans.sort_unstable();
    breaches.extend(orphans.into_iter().map(|(goods_id, request_id, problem)| {
        Breach::BookingMismatch {
            goods_id,
            request_id,
            problem,
        }
    }));
    breaches
}

fn check_accepted(rows: &[DecisionRow], accepted: &HashSet<Uuid>) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let decided: HashSet<Uuid> = rows.iter().map(|r| r.request_id).collect();
    let undecided: Vec<Uuid> = accepted.difference(&decided).copied().collect();
    if let Some(example) = undecided.iter().min() {
        breaches.push(Breach::Undecided {
            count: undecided.len(),
            example: *example,
        });
    }
    let unknown: Vec<Uuid> = rows
        .iter()
        .map(|r| r.request_id)
        .filter(|id| !accepted.contains(id))
        .collect();
    if let Some(example) = unknown.first() {
        breaches.push(Breach::NeverAccepted {
            count: unknown.len(),
            example: *example,
        });
    }
    breaches
}

/// The checks of one goods; `rows` in stream order.
fn check_goods(
    goods: &GoodsFacts,
    rows: &[&DecisionRow],
    bookings: &[&BookingFacts],
) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let goods_id = goods.id;
    breaches.extend(check_once(goods_id, rows));
    let holds: HashMap<Uuid, i64> = bookings
        .iter()
        .filter_map(|b| Some((b.request_id, b.hold_expires_at_ms?)))
        .collect();
    let replayed = replay(goods, rows, &holds);
    breaches.extend(replayed.breaches);

    let confirmed: i64 = bookings
        .iter()
        .filter(|b| b.status.takes_seats())
        .map(|b| i64::from(b.quantity))
        .sum();
    let limit = i64::from(goods.booking_limit);
    if confirmed > limit {
        breaches.push(Breach::Oversold {
            goods_id,
            confirmed,
            limit,
        });
    }
    let waitlisted = bookings
        .iter()
        .filter(|b| b.status == BookingStatus::Waitlisted)
        .count() as i64;
    let counters = [
        ("booked_count", i64::from(goods.booked_count), confirmed),
        (
            "waitlisted_count",
            i64::from(goods.waitlisted_count),
            waitlisted,
        ),
        (
            "decided_count",
            goods.decided_count,
            rows.iter().filter(|r| r.position.is_some()).count() as i64,
        ),
    ];
    for (counter, stored, actual) in counters {
        if stored != actual {
            breaches.push(Breach::CounterMismatch {
                goods_id,
                counter,
                stored,
                actual,
            });
        }
    }

    let mut live_per_user: HashMap<i64, usize> = HashMap::new();
    for booking in bookings.iter().filter(|b| b.status.is_live()) {
        *live_per_user.entry(booking.user_id).or_default() += 1;
    }
    let mut twice: Vec<(i64, usize)> = live_per_user.into_iter().filter(|(_, n)| *n > 1).collect();
    twice.sort_unstable();
    breaches.extend(
        twice
            .into_iter()
            .map(|(user_id, count)| Breach::TwoLivePlaces {
                goods_id,
                user_id,
                count,
            }),
    );

    let by_request: HashMap<Uuid, &BookingFacts> =
        bookings.iter().map(|b| (b.request_id, *b)).collect();
    let mut mismatch = |request_id, problem| {
        breaches.push(Breach::BookingMismatch {
            goods_id,
            request_id,
            problem,
        });
    };
    for row in rows {
        let booking = by_request.get(&row.request_id);
        if matches!(
            row.kind,
            RequestKind::Limit | RequestKind::Confirm | RequestKind::Expire
        ) {
            if booking.is_some() {
                mismatch(row.request_id, "a request of this kind has a booking");
            }
            continue;
        }
        if row.kind == RequestKind::Cancel {
            if booking.is_some() {
                mismatch(row.request_id, "cancel request has a booking");
            }
            let released = replayed.released.get(&row.request_id);
            let target = row
                .booking_id
                .and_then(|id| bookings.iter().find(|b| b.id == id));
            match (released, target) {
                (None, None) => {}
                (Some(want), Some(b))
                    if b.request_id == *want
                        && b.status == BookingStatus::Cancelled
                        && b.cancel_request_id == Some(row.request_id) => {}
                _ => mismatch(
                    row.request_id,
                    "cancel differs from the booking it released",
                ),
            }
            continue;
        }
        let due = replayed
            .bookings
            .get(&row.request_id)
            .filter(|_| !replayed.misdecided.contains(&row.request_id));
        match (row.decision, booking) {
            (d, None) if d.is_live() => mismatch(row.request_id, "live decision without a booking"),
            (d, Some(_)) if !d.is_live() => {
                mismatch(row.request_id, "rejected request has a booking")
            }
            (_, Some(b)) if row.booking_id != Some(b.id) => {
                mismatch(row.request_id, "booking differs from its decision");
            }
            (_, Some(b)) if due.is_some_and(|due| due.status != b.status) => {
                mismatch(row.request_id, "booking status differs from the replay");
            }
            (_, Some(b)) if due.is_some_and(|due| due.promoted != b.promoted) => {
                mismatch(row.request_id, "promotion differs from the replay");
            }
            _ => {}
        }
    }
    let logged: HashSet<Uuid> = rows.iter().map(|r| r.request_id).collect();
    for booking in bookings {
        if !logged.contains(&booking.request_id) {
            mismatch(booking.request_id, "booking without a decision");
        }
    }
    breaches
}

/// One stream entry decided twice, or two decisions at one turn.
fn check_once(goods_id: i64, rows: &[&DecisionRow]) -> Vec<Breach> {
    let mut breaches = Vec::new();
    let mut entries: HashMap<EntryId, Uuid> = HashMap::new();
    let mut turns: HashMap<i64, Uuid> = HashMap::new();
    for row in rows {
        if let Some(first) = entries.insert(row.entry_id, row.request_id) {
            breaches.push(Breach::DecidedTwice {
                goods_id,
                what: format!("stream entry {}", row.entry_id),
                first,
                second: row.request_id,
            });
        }
        if let Some(position) = row.position {
            if let Some(first) = turns.insert(position, row.request_id) {
                breaches.push(Breach::DecidedTwice {
                    goods_id,
                    what: format!("turn {position}"),
                    first,
                    second: row.request_id,
                });
            }
        }
    }
    breaches
}

/// A booking as the replay says it must be now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    status: BookingStatus,
    promoted: bool,
}

/// What [`replay`] found and what it says the bookings must be.
#[derive(Debug, Default)]
struct Replayed {
    breaches: Vec<Breach>,
    /// Every booking request's booking, as it must be now.
    bookings: HashMap<Uuid, Due>,
    /// Per cancel that released a booking, the request of that booking.
    released: HashMap<Uuid, Uuid>,
    /// Requests whose logged decision is not the one due (named already as
    /// `OutOfOrder`): their bookings are not compared again.
    misdecided: HashSet<Uuid>,
}

/// Replays the rules over one goods' log in stream order, from the goods' opening
/// limit (what its first applied limit change replaced; its limit now if none was),
/// checking each applied change's record of the limit it replaced and, at the end,
/// the goods' limit. A booking: a user holding a live place is `already_booked`;
/// otherwise, if the seats left cover it, confirmed, or held when its booking carries
/// a hold deadline (whether the goods held seats then is the goods' setting of that
/// time, which the log does not keep); else waitlisted (or `waitlist_full`: the cap
/// may have changed since, so either is taken, but never while the seats left cover
/// it). A cancel: the user's live place is `cancelled` (else `no_booking`). A limit
/// change: `limit_below_booked` when the seats taken exceed it, else `applied`. A
/// confirm: the user's hold is confirmed if the confirm arrived (its stream entry
/// time) before the hold's deadline, else `hold_expired` and the hold expires; with no
/// hold, `no_hold`. An expiry: the user's hold expires if the expiry arrived at or
/// after its deadline (`hold_not_due` before it; `no_hold` without one). The seats a
/// cancel, a limit change or an expired hold frees go to the waitlist in order, each
/// waitlisted request that fits the seats then free is promoted (to a hold when its
/// booking carries a deadline). Other rejections (deleted user, bad quantity, outside
/// the sale window) depend on facts the log does not keep (a window may have moved
/// since), and take a turn but no seat. The n-th decision that took a turn must carry
/// position n; a dead-lettered request (`unprocessable`) takes none, nor does a
/// request for a goods that was gone (deleted by its organizer) when it was decided.
///
/// `holds`: the hold deadline of every booking that was held, by booking request.
fn replay(goods: &GoodsFacts, rows: &[&DecisionRow], holds: &HashMap<Uuid, i64>) -> Replayed {
    let mut out = Replayed::default();
    let mut limit = rows
        .iter()
        .find(|r| r.decision == Decision::Applied)
        .and_then(|r| r.limit_before)
        .map_or(i64::from(goods.booking_limit), i64::from);
    let mut booked = 0_i64;
    // The live place of each user: its request and seats.
    let mut live: HashMap<i64, (Uuid, i64)> = HashMap::new();
    // The waitlist in decision order: (position, request, seats, user).
    let mut waitlist: Vec<(i64, Uuid, i64, i64)> = Vec::new();
    let took_a_turn = |r: &&&DecisionRow| {
        !matches!(
            r.decision,
            Decision::Rejected(RejectReason::Unprocessable | RejectReason::GoodsNotFound)
        )
    };
    let seated = |request_id: &Uuid| {
        if holds.contains_key(request_id) {
            BookingStatus::Held
        } else {
            BookingStatus::Confirmed
        }
    };
    for (i, row) in rows.iter().filter(took_a_turn).enumerate() {
        let turn = i + 1;
        if row.position != i64::try_from(turn).ok() {
            out.breaches.push(Breach::PositionOutOfOrder {
                goods_id: goods.id,
                turn,
                request_id: row.request_id,
                position: row.position,
            });
        }
        let quantity = i64::from(row.quantity);
        let place = live.get(&row.user_id).copied();
        // The user's hold, if its place is one: (its request, its deadline).
        let hold = place.and_then(|(id, _)| {
            let held = out.bookings.get(&id)?.status == BookingStatus::Held;
            Some((id, *holds.get(&id).filter(|_| held)?))
        });
        let arrived = row.entry_id.ms;
        let left = limit - booked;
        let expected = match (row.kind, row.decision) {
            (_, Decision::Rejected(reason))
                if !matches!(
                    reason,
                    RejectReason::AlreadyBooked
                        | RejectReason::NoBooking
                        | RejectReason::LimitBelowBooked
                        | RejectReason::WaitlistFull
                        | RejectReason::HoldExpired
                        | RejectReason::NoHold
                        | RejectReason::HoldNotDue
                ) =>
            {
                row.decision
            }
            (RequestKind::Limit, _) if quantity < booked => {
                Decision::Rejected(RejectReason::LimitBelowBooked)
            }
            (RequestKind::Limit, _) => Decision::Applied,
            (RequestKind::Cancel, _) if place.is_some() => Decision::Cancelled,
            (RequestKind::Cancel, _) => Decision::Rejected(RejectReason::NoBooking),
            (RequestKind::Confirm, _) => match hold {
                Some((_, deadline)) if arrived < deadline => Decision::Confirmed,
                Some(_) => Decision::Rejected(RejectReason::HoldExpired),
                None => Decision::Rejected(RejectReason::NoHold),
            },
            (RequestKind::Expire, _) => match hold {
                Some((_, deadline)) if arrived >= deadline => Decision::Expired,
                Some(_) => Decision::Rejected(RejectReason::HoldNotDue),
                None => Decision::Rejected(RejectReason::NoHold),
            },
            _ if place.is_some() => Decision::Rejected(RejectReason::AlreadyBooked),
            _ if quantity <= left && holds.contains_key(&row.request_id) => Decision::Held,
            _ if quantity <= left => Decision::Confirmed,
            (_, Decision::Rejected(RejectReason::WaitlistFull)) => row.decision,
            _ => Decision::Waitlisted,
        };
        if row.decision != expected {
            out.misdecided.insert(row.request_id);
            out.breaches.push(Breach::OutOfOrder {
                goods_id: goods.id,
                turn,
                request_id: row.request_id,
                expected: describe(expected),
                actual: describe(row.decision),
                seats_left: left,
            });
        }
        // Go on from what was due, as the correct rule would have: one swapped pair
        // of decisions is two breaches, not a cascade over every later turn.
        let due = |status, promoted| Due { status, promoted };
        let promoted = |out: &Replayed, id: &Uuid| out.bookings.get(id).is_some_and(|d| d.promoted);
        match (row.kind, expected) {
            (RequestKind::Book, Decision::Confirmed | Decision::Held) => {
                booked += quantity;
                live.insert(row.user_id, (row.request_id, quantity));
                out.bookings
                    .insert(row.request_id, due(seated(&row.request_id), false));
            }
            (_, Decision::Waitlisted) => {
                live.insert(row.user_id, (row.request_id, quantity));
                waitlist.push((
                    row.position.unwrap_or_default(),
                    row.request_id,
                    quantity,
                    row.user_id,
                ));
                out.bookings
                    .insert(row.request_id, due(BookingStatus::Waitlisted, false));
            }
            (_, Decision::Cancelled) => {
                let Some((cancelled, seats)) = live.remove(&row.user_id) else {
                    continue;
                };
                let was = promoted(&out, &cancelled);
                if out
                    .bookings
                    .get(&cancelled)
                    .is_some_and(|d| d.status.takes_seats())
                {
                    booked -= seats;
                }
                waitlist.retain(|w| w.1 != cancelled);
                out.bookings
                    .insert(cancelled, due(BookingStatus::Cancelled, was));
                out.released.insert(row.request_id, cancelled);
            }
            (RequestKind::Confirm, Decision::Confirmed) => {
                if let Some((held, _)) = hold {
                    let was = promoted(&out, &held);
                    out.bookings
                        .insert(held, due(BookingStatus::Confirmed, was));
                }
            }
            (_, Decision::Expired | Decision::Rejected(RejectReason::HoldExpired)) => {
                if let Some((held, _)) = hold {
                    let was = promoted(&out, &held);
                    let seats = live.remove(&row.user_id).map_or(0, |(_, seats)| seats);
                    booked -= seats;
                    out.bookings.insert(held, due(BookingStatus::Expired, was));
                }
            }
            (_, Decision::Applied) => {
                if row.decision == Decision::Applied
                    && row.limit_before.map(i64::from) != Some(limit)
                {
                    out.breaches.push(Breach::LimitDiffers {
                        goods_id: goods.id,
                        what: format!("before {}", row.request_id),
                        stored: row.limit_before.map(i64::from),
                        replayed: limit,
                    });
                }
                limit = quantity;
            }
            _ => {}
        }
        // Seats free go to the waitlist in order.
        waitlist.retain(|&(_, request_id, seats, _)| {
            if seats > limit - booked {
                return true;
            }
            booked += seats;
            out.bookings
                .insert(request_id, due(seated(&request_id), true));
            false
        });
    }
    if limit != i64::from(goods.booking_limit) {
        out.breaches.push(Breach::LimitDiffers {
            goods_id: goods.id,
            what: "now".into(),
            stored: Some(goods.booking_limit.into()),
            replayed: limit,
        });
    }
    out
}

fn describe(decision: Decision) -> String {
    match decision.reason() {
        Some(reason) => format!("rejected ({reason})"),
        None => decision.status().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;

    /// A correct sale of one goods: `requests` single-seat requests, users 1..,
    /// `seats` confirmed then waitlisted, every live one with its booking.
    fn sale(requests: usize, seats: i32) -> Facts {
        let mut facts = Facts {
            goods: vec![GoodsFacts {
                id: 1,
                booking_limit: seats,
                booked_count: seats.min(requests as i32),
                waitlisted_count: (requests as i32 - seats).max(0),
                decided_count: requests as i64,
            }],
            ..Facts::default()
        };
        for i in 0..requests {
            let decision = if (i as i32) < seats {
                Decision::Confirmed
            } else {
                Decision::Waitlisted
            };
            let request_id = Uuid::from_u128(i as u128 + 1);
            let booking_id = i as i64 + 100;
            facts.decisions.push(DecisionRow {
                request_id,
                goods_id: 1,
                user_id: i as i64 + 1,
                quantity: 1,
                shard: Shard::new(1).unwrap(),
                entry_id: EntryId {
                    ms: 1_000 + i as i64,
                    seq: 0,
                },
                position: Some(i as i64 + 1),
                decision,
                kind: RequestKind::Book,
                booking_id: Some(booking_id),
                booking_status: decision.booking(),
                promoted_at_s: None,
                hold_expires_at_ms: None,
                limit_before: None,
                accepted_at_s: 1.0,
                decided_at_s: 2.0,
            });
            facts.bookings.push(BookingFacts {
                id: booking_id,
                goods_id: 1,
                user_id: i as i64 + 1,
                request_id,
                quantity: 1,
                status: decision.booking().unwrap(),
                promoted: false,
                cancel_request_id: None,
                hold_expires_at_ms: None,
                users_exist: true,
            });
        }
        facts
    }

    fn accepted(facts: &Facts) -> HashSet<Uuid> {
        facts.decisions.iter().map(|r| r.request_id).collect()
    }

    #[test]
    fn a_correct_sale_has_no_breach() {
        let facts = sale(10, 3);
        assert_eq!(check(&facts, Some(&accepted(&facts))), []);
    }

    #[test]
    fn a_waitlisted_request_confirmed_is_oversold_and_out_of_order() {
        let mut facts = sale(10, 3);
        facts.decisions[5].decision = Decision::Confirmed;
        facts.bookings[5].status = BookingStatus::Confirmed;
        let breaches = check(&facts, None);
        assert!(breaches.contains(&Breach::Oversold {
            goods_id: 1,
            confirmed: 4,
            limit: 3
        }));
        assert!(breaches
            .iter()
            .any(|b| matches!(b, Breach::OutOfOrder { turn: 6, .. })));
        assert!(breaches.iter().any(|b| matches!(
            b,
            Breach::CounterMismatch {
                counter: "booked_count",
                stored: 3,
                actual: 4,
                ..
            }
        )));
    }

    #[test]
    fn a_confirmation_swapped_with_a_later_request_is_named_at_both_turns() {
        let mut facts = sale(10, 3);
        facts.decisions[2].decision = Decision::Waitlisted;
        facts.bookings[2].status = BookingStatus::Waitlisted;
        facts.decisions[7].decision = Decision::Confirmed;
        facts.bookings[7].status = BookingStatus::Confirmed;
        let turns: Vec<usize> = check(&facts, None)
            .iter()
            .filter_map(|b| match b {
                Breach::OutOfOrder { turn, .. } => Some(*turn),
                _ => None,
            })
            .collect();
        assert_eq!(turns, [3, 8]);
    }

    #[test]
    fn a_second_live_place_of_one_user_is_named() {
        let mut facts = sale(5, 3);
        facts.decisions[1].user_id = 1;
        facts.bookings[1].user_id = 1;
        let breaches = check(&facts, None);
        assert!(breaches.contains(&Breach::TwoLivePlaces {
            goods_id: 1,
            user_id: 1,
            count: 2
        }));
        assert!(breaches.iter().any(|b| matches!(
            b,
            Breach::OutOfOrder { turn: 2, expected, .. } if expected == "rejected (already_booked)"
        )));
    }

    #[test]
    fn undecided_and_never_accepted_requests_are_named() {
        let facts = sale(5, 3);
        let mut asked = accepted(&facts);
        let lost = Uuid::from_u128(999);
        asked.insert(lost);
        asked.remove(&Uuid::from_u128(5));
        let breaches = check(&facts, Some(&asked));
        assert!(breaches.contains(&Breach::Undecided {
            count: 1,
            example: lost
        }));
        assert!(breaches.contains(&Breach::NeverAccepted {
            count: 1,
            example: Uuid::from_u128(5)
        }));
    }

    #[test]
    fn one_entry_decided_twice_and_shifted_positions_are_named() {
        let mut facts = sale(5, 3);
        facts.decisions[4].entry_id = facts.decisions[3].entry_id;
        facts.decisions[2].position = Some(7);
        let breaches = check(&facts, None);
        assert!(breaches.iter().any(
            |b| matches!(b, Breach::DecidedTwice { what, .. } if what.starts_with("stream entry"))
        ));
        assert!(breaches.iter().any(|b| matches!(
            b,
            Breach::PositionOutOfOrder {
                turn: 3,
                position: Some(7),
                ..
            }
        )));
    }

    #[test]
    fn rejections_take_no_seat_and_a_large_request_may_waitlist_before_a_small_fits() {
        let mut facts = sale(4, 3);
        facts.decisions[0].quantity = 2;
        facts.bookings[0].quantity = 2;
        facts.decisions[1].decision = Decision::Rejected(RejectReason::InvalidQuantity);
        facts.bookings.remove(1);
        facts.decisions[1].booking_id = None;
        facts.decisions[2].quantity = 3;
        facts.decisions[2].decision = Decision::Waitlisted;
        facts.bookings[1].quantity = 3;
        facts.bookings[1].status = BookingStatus::Waitlisted;
        facts.decisions[3].decision = Decision::Confirmed;
        facts.bookings[2].status = BookingStatus::Confirmed;
        assert_eq!(check(&facts, None), []);
    }

    #[test]
    fn a_dead_lettered_request_takes_no_turn_and_no_seat() {
        let mut facts = sale(4, 2);
        // Request 2 was dead-lettered: logged, no position, no booking.
        facts.decisions[1].decision = Decision::Rejected(RejectReason::Unprocessable);
        facts.decisions[1].position = None;
        facts.decisions[1].booking_id = None;
        facts.bookings.remove(1);
        for (row, position) in facts.decisions[2..].iter_mut().zip([2, 3]) {
            row.position = Some(position);
        }
        facts.decisions[2].decision = Decision::Confirmed;
        facts.bookings[1].status = BookingStatus::Confirmed;
        facts.goods[0].decided_count = 3;
        facts.goods[0].waitlisted_count = 1;
        assert_eq!(check(&facts, None), []);
    }

    #[test]
    fn a_live_decision_without_its_booking_is_named() {
        let mut facts = sale(3, 3);
        facts.bookings.remove(1);
        facts.goods[0].booked_count = 2;
        let breaches = check(&facts, None);
        assert_eq!(
            breaches,
            [Breach::BookingMismatch {
                goods_id: 1,
                request_id: Uuid::from_u128(2),
                problem: "live decision without a booking"
            }]
        );
    }

    /// `sale(5, 3)` and then user 1 cancels: its seat goes to request 4, next in line.
    fn sale_with_a_cancel() -> Facts {
        let mut facts = sale(5, 3);
        let cancel_id = Uuid::from_u128(100);
        let mut row = facts.decisions[0].clone();
        row.request_id = cancel_id;
        row.kind = RequestKind::Cancel;
        row.decision = Decision::Cancelled;
        row.entry_id = EntryId { ms: 2_000, seq: 0 };
        row.position = Some(6);
        row.booking_status = Some(BookingStatus::Cancelled);
        facts.decisions.push(row);
        facts.bookings[0].status = BookingStatus::Cancelled;
        facts.bookings[0].cancel_request_id = Some(cancel_id);
        facts.bookings[3].status = BookingStatus::Confirmed;
        facts.bookings[3].promoted = true;
        facts.goods[0].decided_count = 6;
        facts.goods[0].waitlisted_count = 1;
        facts
    }

    /// `sale(5, 3)` and then, at turn 6, its organizer (user 99) sets the limit to
    /// `to`, decided `decision`.
    fn sale_with_a_limit_change(to: i32, decision: Decision) -> Facts {
        let mut facts = sale(5, 3);
        let mut row = facts.decisions[0].clone();
        row.request_id = Uuid::from_u128(200);
        row.user_id = 99;
        row.kind = RequestKind::Limit;
        row.quantity = to;
        row.decision = decision;
        row.entry_id = EntryId { ms: 2_000, seq: 0 };
        row.position = Some(6);
        row.booking_id = None;
        row.booking_status = None;
        if decision == Decision::Applied {
            row.limit_before = Some(3);
            facts.goods[0].booking_limit = to;
        }
        facts.decisions.push(row);
        facts.goods[0].decided_count = 6;
        facts
    }

    #[test]
    fn a_raised_limit_promotes_the_waitlist_in_order_and_is_replayed_from_the_opening_limit() {
        let mut facts = sale_with_a_limit_change(4, Decision::Applied);
        facts.bookings[3].status = BookingStatus::Confirmed;
        facts.bookings[3].promoted = true;
        facts.goods[0].booked_count = 4;
        facts.goods[0].waitlisted_count = 1;
        assert_eq!(check(&facts, Some(&accepted(&facts))), []);

        // Without the promotion it owes, the replay names the waiting request.
        let mut missed = sale_with_a_limit_change(4, Decision::Applied);
        missed.goods[0].waitlisted_count = 2;
        assert!(check(&missed, None).contains(&Breach::BookingMismatch {
            goods_id: 1,
            request_id: Uuid::from_u128(4),
            problem: "booking status differs from the replay"
        }));
    }

    #[test]
    fn a_limit_the_goods_does_not_hold_or_a_wrong_record_of_the_one_replaced_is_named() {
        let mut facts = sale_with_a_limit_change(3, Decision::Applied);
        facts.goods[0].booking_limit = 4;
        assert_eq!(
            check(&facts, None),
            [Breach::LimitDiffers {
                goods_id: 1,
                what: "now".into(),
                stored: Some(4),
                replayed: 3,
            }]
        );
        // A second change (to the same limit) that says it replaced 2, not 3.
        let mut facts = sale_with_a_limit_change(3, Decision::Applied);
        let mut again = facts.decisions[5].clone();
        again.request_id = Uuid::from_u128(201);
        again.entry_id = EntryId { ms: 3_000, seq: 0 };
        again.position = Some(7);
        again.limit_before = Some(2);
        facts.decisions.push(again);
        facts.goods[0].decided_count = 7;
        assert_eq!(
            check(&facts, None),
            [Breach::LimitDiffers {
                goods_id: 1,
                what: format!("before {}", Uuid::from_u128(201)),
                stored: Some(2),
                replayed: 3,
            }]
        );
    }

    #[test]
    fn a_limit_below_the_booked_seats_must_be_refused() {
        let refused =
            sale_with_a_limit_change(2, Decision::Rejected(RejectReason::LimitBelowBooked));
        assert_eq!(check(&refused, None), []);

        let mut applied = sale_with_a_limit_change(2, Decision::Applied);
        let breaches = check(&applied, None);
        assert!(breaches.contains(&Breach::OutOfOrder {
            goods_id: 1,
            turn: 6,
            request_id: Uuid::from_u128(200),
            expected: "rejected (limit_below_booked)".into(),
            actual: "applied".into(),
            seats_left: 0,
        }));
        // Refusing a change that fits is named too.
        applied = sale_with_a_limit_change(3, Decision::Rejected(RejectReason::LimitBelowBooked));
        assert_eq!(check(&applied, None).len(), 1);
    }

    #[test]
    fn a_full_waitlist_may_refuse_only_what_does_not_fit() {
        let mut facts = sale(5, 3);
        // Request 5 refused for a full waitlist: the cap may have been 1 then.
        facts.decisions[4].decision = Decision::Rejected(RejectReason::WaitlistFull);
        facts.decisions[4].booking_id = None;
        facts.decisions[4].booking_status = None;
        facts.bookings.pop();
        facts.goods[0].waitlisted_count = 1;
        assert_eq!(check(&facts, None), []);

        // Request 3 fitted: refusing it is a breach.
        facts.decisions[2].decision = Decision::Rejected(RejectReason::WaitlistFull);
        assert!(check(&facts, None)
            .iter()
            .any(|b| matches!(b, Breach::OutOfOrder { turn: 3, .. })));
    }

    #[test]
    fn a_cancel_and_the_promotion_it_causes_are_no_breach() {
        let facts = sale_with_a_cancel();
        assert_eq!(check(&facts, Some(&accepted(&facts))), []);
    }

    #[test]
    fn a_missed_promotion_and_a_cancel_naming_another_booking_are_named() {
        let mut facts = sale_with_a_cancel();
        facts.bookings[3].status = BookingStatus::Waitlisted;
        facts.bookings[3].promoted = false;
        facts.goods[0].booked_count = 2;
        let breaches = check(&facts, None);
        assert!(breaches.contains(&Breach::BookingMismatch {
            goods_id: 1,
            request_id: Uuid::from_u128(4),
            problem: "booking status differs from the replay"
        }));

        let mut facts = sale_with_a_cancel();
        facts.decisions[5].booking_id = Some(101);
        let breaches = check(&facts, None);
        assert_eq!(
            breaches,
            [Breach::BookingMismatch {
                goods_id: 1,
                request_id: Uuid::from_u128(100),
                problem: "cancel differs from the booking it released"
            }]
        );

        // The later request (5) promoted instead of the earlier one (4).
        let mut facts = sale_with_a_cancel();
        facts.bookings[3].status = BookingStatus::Waitlisted;
        facts.bookings[3].promoted = false;
        facts.bookings[4].status = BookingStatus::Confirmed;
        facts.bookings[4].promoted = true;
        let problems: Vec<Uuid> = check(&facts, None)
            .iter()
            .filter_map(|b| match b {
                Breach::BookingMismatch { request_id, .. } => Some(*request_id),
                _ => None,
            })
            .collect();
        assert_eq!(problems, [Uuid::from_u128(4), Uuid::from_u128(5)]);
    }
}
