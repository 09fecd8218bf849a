//! Chirper's sequential specification, for the linearizability checker.
//!
//! A post's effect depends on the poster's followers at that moment, so a post may touch any
//! user: histories are checked as one part ([`Keys::All`]); keep checked histories small.

use crate::service::{Command, Post, Reply, UserId};
use engine::lincheck::{Keys, Model};
use engine::partitioned::msg::Response;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One user in the specification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpecUser {
    pub followers: BTreeSet<UserId>,
    pub followees: BTreeSet<UserId>,
    pub timeline: VecDeque<Post>,
}

/// The specification, from the given initial users.
pub struct ChirperModel {
    pub initial: BTreeMap<UserId, SpecUser>,
    pub timeline_len: usize,
}

impl Model for ChirperModel {
    type State = BTreeMap<UserId, SpecUser>;
    type Input = Command;
    type Output = Response<Reply>;

    fn init(&self) -> Self::State {
        self.initial.clone()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Command,
        output: Option<&Response<Reply>>,
    ) -> Option<Self::State> {
        let mut next = state.clone();
        let expected = match input {
            Command::CreateUser(u) => {
                if state.contains_key(u) {
                    Response::AlreadyExists
                } else {
                    next.insert(*u, SpecUser::default());
                    Response::Created
                }
            }
            Command::GetTimeline(u) => match state.get(u) {
                Some(s) => Response::Done(Reply::Timeline(s.timeline.iter().cloned().collect())),
                None => Response::NotFound,
            },
            Command::Post { user, id, text } => match state.get(user) {
                None => Response::NotFound,
                Some(s) => {
                    let post = Post {
                        author: *user,
                        id: *id,
                        text: text.clone(),
                    };
                    let followers: Vec<UserId> = s.followers.iter().copied().collect();
                    if followers.iter().any(|f| !state.contains_key(f)) {
                        // Followers are never deleted, so this cannot happen.
                        return None;
                    }
                    for r in followers.iter().chain(std::iter::once(user)) {
                        let t = &mut next.get_mut(r).expect("exists").timeline;
                        t.push_front(post.clone());
                        t.truncate(self.timeline_len);
                    }
                    Response::Done(Reply::Posted {
                        followers: followers.len() as u32,
                    })
                }
            },
            Command::Follow { follower, followee } | Command::Unfollow { follower, followee } => {
                let follow = matches!(input, Command::Follow { .. });
                if !state.contains_key(follower) || !state.contains_key(followee) {
                    Response::NotFound
                } else if follower == followee {
                    Response::Done(if follow {
                        Reply::Followed(false)
                    } else {
                        Reply::Unfollowed(false)
                    })
                } else {
                    let changed = if follow {
                        next.get_mut(follower)
                            .expect("exists")
                            .followees
                            .insert(*followee)
                    } else {
                        next.get_mut(follower)
                            .expect("exists")
                            .followees
                            .remove(followee)
                    };
                    let b = &mut next.get_mut(followee).expect("exists").followers;
                    if follow {
                        b.insert(*follower);
                    } else {
                        b.remove(follower);
                    }
                    Response::Done(if follow {
                        Reply::Followed(changed)
                    } else {
                        Reply::Unfollowed(changed)
                    })
                }
            }
        };
        match output {
            Some(o) if *o != expected => None,
            _ => Some(next),
        }
    }

    fn keys(&self, _input: &Command) -> Keys {
        Keys::All
    }
}
