//! The ring: which members hold each shard.
//!
//! Every member owns [`TOKENS_PER_MEMBER`] points on a 64-bit ring, derived from its name; a
//! shard's point is derived from its number, and its holders are the first
//! `replication_factor` distinct members met walking clockwise from there. The first of them
//! is the shard's *primary*. Placement depends only on the member names, the shard count and
//! the replication factor, so every member computes the same ring without talking to the
//! others, and adding a member moves only the shards whose points now fall to it.

/// Points each member owns on the ring: enough that shards spread evenly over a few members.
pub const TOKENS_PER_MEMBER: u32 = 128;

/// Shard placement over a fixed member list.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Holders of each shard, by member index, primary first.
    holders: Vec<Vec<usize>>,
}

impl Ring {
    /// Places `shards` shards on `members` with `replication_factor` holders each (fewer when
    /// there are fewer members).
    pub fn new(members: &[String], shards: u32, replication_factor: usize) -> Ring {
        let mut tokens: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(index, name)| {
                (0..TOKENS_PER_MEMBER)
                    .map(move |n| (token(format!("{name}#{n}").as_bytes()), index))
            })
            .collect();
        tokens.sort_unstable();
        let wanted = replication_factor.min(members.len());
        let holders = (0..shards)
            .map(|shard| {
                let point = token(format!("shard-{shard}").as_bytes());
                let start = tokens.partition_point(|(t, _)| *t < point);
                let mut holders = Vec::with_capacity(wanted);
                for (_, member) in tokens.iter().cycle().skip(start).take(tokens.len()) {
                    if holders.len() == wanted {
                        break;
                    }
                    if !holders.contains(member) {
                        holders.push(*member);
                    }
                }
                holders
            })
            .collect();
        Ring { holders }
    }

    /// The members holding `shard`, primary first.
    pub fn holders(&self, shard: u32) -> &[usize] {
        self.holders
            .get(shard as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Number of shards placed.
    pub fn shards(&self) -> u32 {
        self.holders.len() as u32
    }
}

/// A well-mixed 64-bit point for `bytes`: FNV-1a, then SplitMix64's finalizer, so that names
/// differing in one character land far apart.
fn token(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58476d1ce4e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d049bb133111eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn every_shard_has_distinct_holders_up_to_the_replication_factor() {
        let ring = Ring::new(&names(3), 64, 2);
        for shard in 0..64 {
            let holders = ring.holders(shard);
            assert_eq!(holders.len(), 2);
            assert_ne!(holders[0], holders[1]);
        }
        assert_eq!(Ring::new(&names(2), 8, 3).holders(0).len(), 2);
    }

    #[test]
    fn shards_spread_over_every_member() {
        let ring = Ring::new(&names(3), 64, 1);
        let mut primaries = [0; 3];
        for shard in 0..64 {
            primaries[ring.holders(shard)[0]] += 1;
        }
        assert!(primaries.iter().all(|&n| n >= 10), "{primaries:?}");
    }

    #[test]
    fn placement_depends_only_on_names_shards_and_factor() {
        let a = Ring::new(&names(4), 32, 2);
        let b = Ring::new(&names(4), 32, 2);
        assert!((0..32).all(|s| a.holders(s) == b.holders(s)));
    }

    #[test]
    fn a_new_member_takes_shards_without_moving_the_others_between_old_members() {
        let before = Ring::new(&names(3), 64, 1);
        let after = Ring::new(&names(4), 64, 1);
        for shard in 0..64 {
            let (old, new) = (before.holders(shard)[0], after.holders(shard)[0]);
            assert!(
                new == old || new == 3,
                "shard {shard} moved from {old} to {new}"
            );
        }
    }
}
