//! Chirper, a Twitter-like service on the scale-out engine.
//!
//! Every user is one object: its followers, its followees and its *materialized timeline*
//! (the newest posts of the users it follows and its own, at most `timeline_len`). So:
//!
//! - `GetTimeline(u)` reads one object: single-partition by construction.
//! - `Follow(a, b)` / `Unfollow(a, b)` touch two users (at most two partitions).
//! - `Post(u, ...)` writes the poster's and every follower's timeline: it names only the
//!   poster, and the first attempt is answered `retry(gamma)` with the followers, which the
//!   client then gathers (DS-SMR moves them into one partition; S-SMR exchanges them).
//! - `CreateUser(u)` creates an empty user.
//!
//! Users of a preloaded social graph ([`crate::graph`]) start with its follow edges, placed by
//! a placement vector (for example by community, [`crate::graph::place_by_community`]); new
//! users are placed by id.

use crate::graph::SocialGraph;
use bytes::Bytes;
use engine::partitioned::service::{
    Kind, Need, ObjectId, Objects, PartitionId, PartitionedService,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// A user id.
pub type UserId = u32;

/// One post.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Post {
    pub author: UserId,
    /// Chosen by the client (unique per client in the workloads).
    pub id: u64,
    pub text: Bytes,
}

/// A user: the value of one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    /// Sorted, distinct.
    pub followers: Vec<UserId>,
    /// Sorted, distinct.
    pub followees: Vec<UserId>,
    /// Newest first.
    pub timeline: VecDeque<Post>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    CreateUser(UserId),
    Post { user: UserId, id: u64, text: Bytes },
    Follow { follower: UserId, followee: UserId },
    Unfollow { follower: UserId, followee: UserId },
    GetTimeline(UserId),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// The post reached the poster's timeline and `followers` others.
    Posted {
        followers: u32,
    },
    /// Whether the follow changed anything (false: already following, or oneself).
    Followed(bool),
    Unfollowed(bool),
    Timeline(Vec<Post>),
}

/// How Chirper behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChirperConfig {
    /// Posts kept per timeline.
    pub timeline_len: usize,
}

impl Default for ChirperConfig {
    fn default() -> Self {
        ChirperConfig { timeline_len: 16 }
    }
}

/// The service (see the module docs).
pub struct Chirper {
    pub config: ChirperConfig,
    graph: Option<Arc<SocialGraph>>,
    /// Partition count and partition of each preloaded user.
    placement: Option<(u32, Arc<Vec<PartitionId>>)>,
}

impl Chirper {
    /// A Chirper with no users.
    pub fn new(config: ChirperConfig) -> Self {
        Chirper {
            config,
            graph: None,
            placement: None,
        }
    }

    /// A Chirper whose users start as `graph`'s, user `u` in partition `placement[u]` of
    /// `partitions` (placement vectors for other partition counts are ignored: users are then
    /// placed by id).
    pub fn with_graph(
        config: ChirperConfig,
        graph: Arc<SocialGraph>,
        partitions: u32,
        placement: Vec<PartitionId>,
    ) -> Result<Self, String> {
        if placement.len() != graph.users() as usize {
            return Err(format!(
                "the placement has {} users, the graph {}",
                placement.len(),
                graph.users()
            ));
        }
        if let Some(p) = placement.iter().find(|p| **p >= partitions) {
            return Err(format!("placement names partition {p} of {partitions}"));
        }
        Ok(Chirper {
            config,
            graph: Some(graph),
            placement: Some((partitions, Arc::new(placement))),
        })
    }

    /// Users of the preloaded graph (ids `0..users`).
    pub fn preloaded_users(&self) -> u32 {
        self.graph.as_ref().map_or(0, |g| g.users())
    }

    pub fn graph(&self) -> Option<&Arc<SocialGraph>> {
        self.graph.as_ref()
    }
}

fn insert_sorted(v: &mut Vec<UserId>, x: UserId) -> bool {
    match v.binary_search(&x) {
        Ok(_) => false,
        Err(i) => {
            v.insert(i, x);
            true
        }
    }
}

fn remove_sorted(v: &mut Vec<UserId>, x: UserId) -> bool {
    match v.binary_search(&x) {
        Ok(i) => {
            v.remove(i);
            true
        }
        Err(_) => false,
    }
}

impl PartitionedService for Chirper {
    type Command = Command;
    type Reply = Reply;
    type Value = User;

    fn name(&self) -> &'static str {
        "chirper"
    }

    fn kind(&self, cmd: &Command) -> Kind {
        match cmd {
            Command::CreateUser(u) => Kind::Create(u64::from(*u)),
            Command::Post { user, .. } | Command::GetTimeline(user) => {
                Kind::Access(vec![u64::from(*user)])
            }
            Command::Follow { follower, followee } | Command::Unfollow { follower, followee } => {
                Kind::access(vec![u64::from(*follower), u64::from(*followee)])
            }
        }
    }

    fn initial(&self, _cmd: &Command) -> User {
        User::default()
    }

    /// A timeline read changes nothing: with fast reads it is served off the log.
    fn read_only(&self, cmd: &Command) -> bool {
        matches!(cmd, Command::GetTimeline(_))
    }

    fn execute(&self, cmd: &Command, objects: &mut Objects<'_, User>) -> Result<Reply, Need> {
        let obj = |u: UserId| ObjectId::from(u);
        match cmd {
            Command::GetTimeline(u) => {
                let user = objects.get(obj(*u)).ok_or(Need(vec![obj(*u)]))?;
                Ok(Reply::Timeline(user.timeline.iter().cloned().collect()))
            }
            Command::Post { user, id, text } => {
                let poster = objects.get(obj(*user)).ok_or(Need(vec![obj(*user)]))?;
                // Every follower must be here before anything changes.
                let missing: Vec<ObjectId> = poster
                    .followers
                    .iter()
                    .map(|f| obj(*f))
                    .filter(|f| !objects.has(*f))
                    .collect();
                if !missing.is_empty() {
                    return Err(Need(missing));
                }
                let followers = poster.followers.clone();
                let post = Post {
                    author: *user,
                    id: *id,
                    text: text.clone(),
                };
                for r in followers.iter().chain(std::iter::once(user)) {
                    let t = &mut objects.get_mut(obj(*r)).expect("checked").timeline;
                    t.push_front(post.clone());
                    t.truncate(self.config.timeline_len);
                }
                Ok(Reply::Posted {
                    followers: followers.len() as u32,
                })
            }
            Command::Follow { follower, followee } | Command::Unfollow { follower, followee } => {
                let follow = matches!(cmd, Command::Follow { .. });
                if follower == followee {
                    return Ok(if follow {
                        Reply::Followed(false)
                    } else {
                        Reply::Unfollowed(false)
                    });
                }
                let (a, b) = objects
                    .pair_mut(obj(*follower), obj(*followee))
                    .ok_or(Need(vec![obj(*follower), obj(*followee)]))?;
                Ok(if follow {
                    let changed = insert_sorted(&mut a.followees, *followee);
                    insert_sorted(&mut b.followers, *follower);
                    Reply::Followed(changed)
                } else {
                    let changed = remove_sorted(&mut a.followees, *followee);
                    remove_sorted(&mut b.followers, *follower);
                    Reply::Unfollowed(changed)
                })
            }
            Command::CreateUser(_) => Ok(Reply::Followed(false)),
        }
    }

    fn place(&self, object: ObjectId, partitions: u32) -> PartitionId {
        if let Some((k, p)) = &self.placement {
            if *k == partitions {
                if let Some(q) = usize::try_from(object).ok().and_then(|i| p.get(i)) {
                    return *q;
                }
            }
        }
        (object % u64::from(partitions)) as PartitionId
    }

    fn preload(&self) -> Vec<(ObjectId, User)> {
        let Some(g) = &self.graph else {
            return Vec::new();
        };
        (0..g.users())
            .map(|u| {
                (
                    ObjectId::from(u),
                    User {
                        followers: g.followers(u).to_vec(),
                        followees: g.followees(u).to_vec(),
                        timeline: VecDeque::new(),
                    },
                )
            })
            .collect()
    }

    /// Gathers where most of the command's users already are, so a post moves as few
    /// followers as possible and a community converges on the partition where most of it
    /// lives. Ties (every follow or unfollow of users in two partitions is one) go to the
    /// partition of the lowest user id involved: a deterministic anchor, so repeated
    /// two-user commands pull a community together instead of random-walking it between
    /// partitions (the seed library's random choice does the latter, the weakness that
    /// motivated DynaStar). `draw` is not used.
    fn target(
        &self,
        _cmd: &Command,
        locations: &[(ObjectId, PartitionId)],
        _draw: u64,
    ) -> PartitionId {
        let mut counts: Vec<(PartitionId, usize, ObjectId)> = Vec::new();
        for &(o, p) in locations {
            match counts.iter_mut().find(|(q, _, _)| *q == p) {
                Some((_, n, lowest)) => {
                    *n += 1;
                    *lowest = (*lowest).min(o);
                }
                None => counts.push((p, 1, o)),
            }
        }
        counts
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map_or(0, |(p, _, _)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: u32) -> Vec<(ObjectId, User)> {
        (0..n).map(|u| (u64::from(u), User::default())).collect()
    }

    #[test]
    fn a_post_needs_every_follower_then_reaches_their_timelines() {
        let c = Chirper::new(ChirperConfig { timeline_len: 2 });
        let mut items = users(3);
        let mut o = Objects::new(&mut items);
        for f in [1, 2] {
            let r = c.execute(
                &Command::Follow {
                    follower: f,
                    followee: 0,
                },
                &mut o,
            );
            assert_eq!(r, Ok(Reply::Followed(true)));
        }
        let mut only_poster = vec![(0u64, o.get(0).unwrap().clone())];
        let post = |id| Command::Post {
            user: 0,
            id,
            text: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            c.execute(&post(1), &mut Objects::new(&mut only_poster)),
            Err(Need(vec![1, 2]))
        );
        assert!(
            only_poster[0].1.timeline.is_empty(),
            "a refused post changes nothing"
        );
        for id in 1..=3 {
            assert_eq!(
                c.execute(&post(id), &mut o),
                Ok(Reply::Posted { followers: 2 })
            );
        }
        let Ok(Reply::Timeline(t)) = c.execute(&Command::GetTimeline(2), &mut o) else {
            panic!()
        };
        assert_eq!(
            t.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![3, 2],
            "bounded, newest first"
        );
        assert_eq!(
            c.execute(
                &Command::Unfollow {
                    follower: 1,
                    followee: 0
                },
                &mut o
            ),
            Ok(Reply::Unfollowed(true))
        );
        assert_eq!(o.get(0).unwrap().followers, vec![2]);
        assert_eq!(o.get(1).unwrap().followees, Vec::<u32>::new());
    }

    #[test]
    fn the_target_is_where_most_objects_are_and_ties_go_to_the_lowest_user() {
        let c = Chirper::new(ChirperConfig::default());
        let l = [(1, 2), (2, 0), (3, 2), (4, 1)];
        assert_eq!(c.target(&Command::GetTimeline(1), &l, 7), 2);
        let tie = [(5, 0), (2, 1)];
        for draw in 0..4 {
            assert_eq!(c.target(&Command::GetTimeline(1), &tie, draw), 1);
        }
    }
}
