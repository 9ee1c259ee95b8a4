//! Client-side load balancing over [`Discovery`]'s healthy instances.
//!
//! Every pick reads the cached instance list (an `Arc`, no copy); the
//! strategy's state (round-robin position, smooth weights, the hash ring)
//! is rebuilt only when that list changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use crate::discovery::{Discovery, Instance};
use crate::error::{Error, Result};
use crate::hash::{mix, stable_hash};

/// How a [`Balancer`] chooses an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Each instance in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Smooth weighted round-robin (nginx): in proportion to the weights,
    /// interleaved rather than in bursts.
    WeightedRoundRobin,
    /// The instance with the fewest picks in flight (see [`Pick`]).
    LeastConnections,
    /// The same key goes to the same instance; when an instance joins or
    /// leaves only about 1/n of the keys move. `virtual_nodes` points per
    /// instance on the ring (100-200 is plenty).
    ConsistentHash {
        /// Ring points per instance.
        virtual_nodes: usize,
    },
}

/// Rendezvous (highest random weight) hashing: the candidate that owns
/// `key`, the same in every process that sees the same candidates, whatever
/// their order. When a candidate leaves, only its keys move (each to the
/// candidate that ranked second for it); when one joins, it takes about
/// 1/n of the keys. `None` when there is no candidate.
///
/// ```
/// let replicas = ["a", "b", "c"];
/// let owner = etcd_patterns::balance::rendezvous("cluster-1", replicas).unwrap();
/// assert!(replicas.contains(&owner));
/// let reversed = ["c", "b", "a"];
/// assert_eq!(etcd_patterns::balance::rendezvous("cluster-1", reversed), Some(owner));
/// ```
pub fn rendezvous<'a, I>(key: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    candidates
        .into_iter()
        .map(|c| (stable_hash(&[key.as_bytes(), c.as_bytes()]), c))
        // Ties (a 64-bit collision) go to the smaller name, so still stable.
        .max_by(|(ha, a), (hb, b)| ha.cmp(hb).then_with(|| b.cmp(a)))
        .map(|(_, c)| c)
}

/// A chosen instance. For [`Strategy::LeastConnections`] it counts as in
/// flight until dropped.
#[derive(Debug)]
pub struct Pick {
    instance: Instance,
    _in_flight: Option<InFlight>,
}

impl Pick {
    /// The chosen instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
}

impl std::ops::Deref for Pick {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct State {
    /// The list the derived state below was built from.
    built_from: Option<Arc<[Instance]>>,
    next: usize,
    rng: u64,
    /// Smooth WRR current weights, by position in `built_from`.
    current: Vec<i64>,
    /// Consistent-hash ring: (point, position in `built_from`), sorted.
    ring: Vec<(u64, usize)>,
    /// In-flight counters by instance id (kept across list changes).
    in_flight: HashMap<String, Arc<AtomicUsize>>,
}

/// Picks instances of one service.
///
/// ```no_run
/// # async fn demo(discovery: etcd_patterns::Discovery) -> Result<(), etcd_patterns::Error> {
/// use etcd_patterns::{Balancer, Strategy};
/// let lb = Balancer::new(discovery, "api", Strategy::WeightedRoundRobin);
/// let pick = lb.pick()?; // Error::NoInstance when no healthy instance is known
/// println!("send to {}", pick.address);
///
/// let sticky = Balancer::new(lb.discovery().clone(), "cache", Strategy::ConsistentHash { virtual_nodes: 160 });
/// let shard = sticky.pick_for("user-42")?;
/// # Ok(()) }
/// ```
pub struct Balancer {
    discovery: Discovery,
    service: String,
    strategy: Strategy,
    state: StdMutex<State>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.service)
            .field("strategy", &self.strategy)
            .finish()
    }
}

impl Balancer {
    /// A balancer over the healthy instances of `service`.
    pub fn new(discovery: Discovery, service: impl Into<String>, strategy: Strategy) -> Balancer {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Balancer {
            discovery,
            service: service.into(),
            strategy,
            state: StdMutex::new(State {
                rng: mix(seed) | 1,
                ..State::default()
            }),
        }
    }

    /// The discovery this balancer reads.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Picks an instance ([`Strategy::ConsistentHash`] without a key
    /// behaves like round-robin: use [`Balancer::pick_for`]).
    pub fn pick(&self) -> Result<Pick> {
        self.pick_inner(None)
    }

    /// Picks the instance for `key` (consistent hashing; the other
    /// strategies ignore the key).
    pub fn pick_for(&self, key: &str) -> Result<Pick> {
        self.pick_inner(Some(key))
    }

    fn pick_inner(&self, key: Option<&str>) -> Result<Pick> {
        let list = self.discovery.discover(&self.service);
        if list.is_empty() {
            return Err(Error::NoInstance {
                service: self.service.clone(),
            });
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st
            .built_from
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(b, &list))
        {
            self.rebuild(&mut st, &list);
        }
        let n = list.len();
        let idx = match (self.strategy, key) {
            (Strategy::Random, _) => {
                // xorshift64*: good enough to spread load, no dependency.
                let mut x = st.rng;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                st.rng = x;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
            }
            (Strategy::WeightedRoundRobin, _) => {
                let total: i64 = list.iter().map(|i| i64::from(i.weight.max(1))).sum();
                let mut best = 0;
                for (i, inst) in list.iter().enumerate() {
                    st.current[i] += i64::from(inst.weight.max(1));
                    if st.current[i] > st.current[best] {
                        best = i;
                    }
                }
                st.current[best] -= total;
                best
            }
            (Strategy::LeastConnections, _) => {
                // Fewest in flight; ties broken round-robin.
                let start = st.next;
                st.next = st.next.wrapping_add(1);
                (0..n)
                    .map(|k| (start + k) % n)
                    .min_by_key(|&i| st.in_flight[&list[i].id].load(Ordering::Relaxed))
                    .unwrap_or(0)
            }
            (Strategy::ConsistentHash { .. }, Some(key)) => {
                let h = stable_hash(&[key.as_bytes()]);
                let at = st.ring.partition_point(|(p, _)| *p < h);
                st.ring[at % st.ring.len()].1
            }
            (Strategy::RoundRobin | Strategy::ConsistentHash { .. }, _) => {
                let i = st.next % n;
                st.next = st.next.wrapping_add(1);
                i
            }
        };
        let in_flight = (self.strategy == Strategy::LeastConnections).then(|| {
            let c = st.in_flight[&list[idx].id].clone();
            c.fetch_add(1, Ordering::Relaxed);
            InFlight(c)
        });
        Ok(Pick {
            instance: list[idx].clone(),
            _in_flight: in_flight,
        })
    }

    fn rebuild(&self, st: &mut State, list: &Arc<[Instance]>) {
        st.current = vec![0; list.len()];
        st.ring.clear();
        if let Strategy::ConsistentHash { virtual_nodes } = self.strategy {
            for (pos, inst) in list.iter().enumerate() {
                for v in 0..virtual_nodes.max(1) {
                    let point = stable_hash(&[inst.id.as_bytes(), &(v as u64).to_le_bytes()]);
                    st.ring.push((point, pos));
                }
            }
            st.ring.sort_unstable();
        }
        for inst in list.iter() {
            st.in_flight.entry(inst.id.clone()).or_default();
        }
        st.in_flight
            .retain(|id, c| list.iter().any(|i| &i.id == id) || c.load(Ordering::Relaxed) > 0);
        st.built_from = Some(list.clone());
    }

    /// Picks currently in flight on instance `id` (least-connections).
    pub fn in_flight(&self, id: &str) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.in_flight
            .get(id)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::rendezvous;

    #[test]
    fn rendezvous_spreads_keys_and_moves_only_the_leavers() {
        let all = ["replica-a", "replica-b", "replica-c"];
        let keys: Vec<String> = (0..3000).map(|i| format!("cluster-{i}")).collect();
        let owner = |k: &str, c: &[&'static str]| rendezvous(k, c.iter().copied()).unwrap();
        for r in all {
            let n = keys.iter().filter(|k| owner(k, &all) == r).count();
            assert!((800..=1200).contains(&n), "{r} owns {n} of 3000");
        }
        let left = ["replica-a", "replica-c"];
        for k in &keys {
            let before = owner(k, &all);
            let after = owner(k, &left);
            if before != "replica-b" {
                assert_eq!(before, after, "{k} moved although its owner stayed");
            }
        }
        assert_eq!(rendezvous("k", std::iter::empty::<&str>()), None);
    }
}
