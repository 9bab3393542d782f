//! Range splits through the client (issue #18): `ctl split KEY`.

use bytes::Bytes;

use super::{Client, Error};
use crate::meta::{IdKind, MetaCmd, MetaReply};
use crate::route::shard_of;
use crate::wire::{ClientError, Op, Reply};

/// What a split did: range `parent` now ends at the key, range `right`
/// starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitDone {
    pub parent: u64,
    pub right: u64,
}

impl Client {
    /// Splits the range holding `key` at `key`: a new range id on the
    /// parent's shard from the meta group, then `Op::Split` on the parent's leader,
    /// answered once the split applied there (the new range serves within
    /// a round trip). The range map is read again afterwards. Asked again
    /// (a lost answer), the same split is answered `Done`; asked again
    /// later (a range already starts at `key`), the split in force is the
    /// answer: at once if this client's map shows it (nothing allocated
    /// or proposed), else once the leader refused and the map was read
    /// again (an id was allocated then, and is never used).
    ///
    /// Errors: no range holds `key` (`Unreachable`, as a key lookup's);
    /// the meta group refused or is unreachable; the leader refused
    /// (`BadRequest`: `key` is the first key of the keyspace, or the id is
    /// in use).
    pub async fn split(&self, key: &[u8]) -> Result<SplitDone, Error> {
        let parent = self.group_for(key).await?;
        if let Some(done) = self.split_in_force(key) {
            return Ok(done);
        }
        match self.split_range(parent, key).await {
            // The map was behind: the range had split at `key` already.
            // The parent keeps its id on the left; the nodes report the
            // range starting at `key` (not the one ending there).
            Err(Error::Server(ClientError::BadRequest { reason })) => {
                self.fetch_ranges(key, false).await;
                match self.range_starting_at(key) {
                    Some(right) => Ok(SplitDone { parent, right }),
                    None => Err(Error::Server(ClientError::BadRequest { reason })),
                }
            }
            r => r,
        }
    }

    /// The split at `key` as this client's map has it: a range starting
    /// at `key` and the one ending there (`None`: no such pair).
    fn split_in_force(&self, key: &[u8]) -> Option<SplitDone> {
        let right = self.range_starting_at(key)?;
        let ranges = self.inner.ranges.borrow();
        let parent = ranges.iter().find(|d| d.end == key)?.id;
        Some(SplitDone { parent, right })
    }

    /// The range this client's map has starting at `key` (never the first
    /// range: no split makes it).
    fn range_starting_at(&self, key: &[u8]) -> Option<u64> {
        let ranges = self.inner.ranges.borrow();
        let d = ranges
            .range_of(key)
            .filter(|d| !key.is_empty() && d.start == key)?;
        Some(d.id)
    }

    /// [`Client::split`] of range `parent`, which holds `key` (refused
    /// with `BadRequest` if it does not).
    pub async fn split_range(&self, parent: u64, key: &[u8]) -> Result<SplitDone, Error> {
        let shards = self.inner.shards.get().max(1);
        let right = self.range_id_on_shard_of(parent, shards).await?;
        let op = Op::Split {
            key: Bytes::copy_from_slice(key),
            right,
        };
        match self.admin_on_leader(parent, op).await? {
            Reply::Done => {}
            r => return Err(super::unexpected(r)),
        }
        self.inner.ranges.borrow_mut().remove(parent);
        self.fetch_ranges(key, false).await;
        Ok(SplitDone { parent, right })
    }

    /// A new range id on range `parent`'s shard (`id % shards`), from the
    /// meta group: `shards` consecutive ids hold exactly one (the others
    /// are never used).
    async fn range_id_on_shard_of(&self, parent: u64, shards: u32) -> Result<u64, Error> {
        let cmd = MetaCmd::AllocIds {
            kind: IdKind::Range,
            count: shards,
        };
        let want = shard_of(parent, shards);
        match self.meta(&cmd).await? {
            MetaReply::Ids { first, count } => (first..first + u64::from(count))
                .find(|&id| shard_of(id, shards) == want)
                .ok_or_else(|| {
                    Error::Server(ClientError::Failed {
                        reason: format!(
                            "the meta group gave {count} range ids from {first}, none on shard {want}"
                        ),
                    })
                }),
            r => Err(Error::Server(ClientError::Failed {
                reason: format!("the meta group answered an id allocation with {r:?}"),
            })),
        }
    }
}
