//! The fencing stamp a holder writes on the server groups it acts on: its store and the epoch
//! of the cluster lock it holds. A holder that finds a newer epoch of its own store on a group
//! has lost the cluster to another replica and stops.

use super::{ObservedCluster, labels};

/// A holder's mark: which store's lock, and that lock's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// The id of the state store whose lock it holds (epochs of other stores do not compare).
    pub store: String,
    /// The lock's fencing epoch.
    pub epoch: u64,
}

impl Stamp {
    /// The stamp of a holding of `store`'s lock at `epoch`.
    pub fn new(store: impl Into<String>, epoch: u64) -> Self {
        Self {
            store: store.into(),
            epoch,
        }
    }

    /// As written on a group under [`labels::EPOCH`]: `EPOCH@STORE`.
    pub fn value(&self) -> String {
        format!("{}@{}", self.epoch, self.store)
    }

    /// A stamp read back from a group; `None` for a value Keelson did not write.
    pub fn parse(value: &str) -> Option<Self> {
        let (epoch, store) = value.split_once('@')?;
        Some(Self::new(store, epoch.parse().ok()?))
    }

    /// The newest epoch of this stamp's store on `cluster`'s groups, if it is newer than this
    /// one: another holder has acted since this one took the lock.
    pub fn superseded_on(&self, cluster: &ObservedCluster) -> Option<u64> {
        self.superseded_among(
            cluster
                .server_groups
                .iter()
                .filter_map(|g| g.labels.get(labels::EPOCH).map(String::as_str)),
        )
    }

    /// [`Stamp::superseded_on`] for the stamp values a target keeps its own way.
    pub fn superseded_among<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Option<u64> {
        values
            .into_iter()
            .filter_map(Self::parse)
            .filter(|s| s.store == self.store)
            .map(|s| s.epoch)
            .max()
            .filter(|&newest| newest > self.epoch)
    }

    /// Why a holder with this stamp stops on finding `newer`.
    pub fn superseded_why(&self, newer: u64) -> String {
        format!(
            "another holder has acted on the cluster (epoch {newer} is written on it; this replica holds epoch {})",
            self.epoch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(stamps: &[&str]) -> ObservedCluster {
        let groups: Vec<serde_json::Value> = stamps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({
                    "name": format!("web-v00{i}"), "sequence": i, "version": "1",
                    "spec_hash": "h", "capacity": 1, "enabled": true, "weight": 100,
                    "instances": [], "labels": {labels::EPOCH: s},
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": {"environment": "dev", "target": "local", "name": "web"},
            "app": "web",
            "server_groups": groups,
        }))
        .unwrap()
    }

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let s = Stamp::new("st0re", 7);
        assert_eq!(s.value(), "7@st0re");
        assert_eq!(Stamp::parse(&s.value()), Some(s));
        assert_eq!(Stamp::parse("7"), None);
        assert_eq!(Stamp::parse("x@st0re"), None);
    }

    #[test]
    fn only_a_newer_epoch_of_the_same_store_supersedes() {
        let me = Stamp::new("a", 5);
        assert_eq!(me.superseded_on(&cluster(&["4@a", "5@a"])), None);
        assert_eq!(me.superseded_on(&cluster(&["4@a", "6@a"])), Some(6));
        // Another store's epochs count from elsewhere: not comparable.
        assert_eq!(me.superseded_on(&cluster(&["9@b", "garbage"])), None);
        assert_eq!(me.superseded_on(&cluster(&[])), None);
    }
}
