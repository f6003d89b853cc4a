//! Adjust-version through the node: ask the Engine, then wait for the
//! outcome it orders (section 5 of DESIGN.md).
//!
//! A request is checked on this node first (refusals come back at once as
//! [`AdjustError::Refused`]), then ordered by the group's sequencer, which
//! checks again: every member learns the same outcome at the same position
//! ([`GroupEvent::VersionAdjusted`](super::GroupEvent::VersionAdjusted)
//! after the `ViewChange` for a switch), and the requester's future
//! resolves with it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use concord_membership::{GroupId, ProtocolVersion, Scope, Target};

use super::core::{AdjustWait, Core};
use super::error::AdjustError;
use super::{Group, Node, clock};

/// A group switched protocol version at an agreed position of its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjusted {
    /// The group.
    pub group: GroupId,
    /// The position of the switch: everything ordered before it ran under
    /// `from`, everything after runs under `to`.
    pub position: u64,
    /// The version before.
    pub from: ProtocolVersion,
    /// The version after.
    pub to: ProtocolVersion,
}

impl Node {
    /// Switches every group this node is a member of to `target` (a version,
    /// or the highest one every configured node supports), and waits for
    /// each group's ordered outcome.
    ///
    /// `Err` if nothing was asked: this node's check refused (naming the
    /// culprit; one refusal refuses every group) or the node stopped.
    /// Otherwise one outcome per group that did not already run the target
    /// (those are left alone and not listed): [`Adjusted`], or why that
    /// group did not switch. Dropping the future drops the wait, not the
    /// requests.
    ///
    /// ```no_run
    /// # use concord_membership::Target;
    /// # use concord_runtime::node::Node;
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// for outcome in node.adjust_version(Target::HighestCommon).await? {
    ///     match outcome {
    ///         Ok(a) => println!("{:?}: {:?} -> {:?} at {}", a.group, a.from, a.to, a.position),
    ///         Err(e) => eprintln!("{e}"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn adjust_version(
        &self,
        target: Target,
    ) -> Result<Vec<Result<Adjusted, AdjustError>>, AdjustError> {
        let asked = ask(&self.core, Scope::All, target)?;
        let mut out = Vec::with_capacity(asked.len());
        for a in &asked {
            out.push(a.outcome().await);
        }
        Ok(out)
    }
}

impl Group {
    /// Switches this group to `target` and waits for the ordered outcome:
    /// `Ok(None)` if the group already runs it (nothing is ordered),
    /// `Ok(Some(_))` with the position of the switch, or why not (see
    /// [`AdjustError`]).
    ///
    /// ```no_run
    /// # use concord_membership::{DeliveryMode, ProtocolVersion, Target};
    /// # use concord_runtime::node::{GroupEvent, Node};
    /// # async fn demo(node: Node) -> Result<(), Box<dyn std::error::Error>> {
    /// let orders = node.join("orders", DeliveryMode::Agreed).await?;
    /// if let Some(a) = orders.adjust_version(Target::Exact(ProtocolVersion(2))).await? {
    ///     // Every member reads this switch at a.position, in its order.
    ///     println!("orders runs {:?} from position {}", a.to, a.position);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn adjust_version(&self, target: Target) -> Result<Option<Adjusted>, AdjustError> {
        let asked = ask(&self.core, Scope::Group(self.id), target)?;
        match asked.first() {
            None => Ok(None),
            Some(a) => a.outcome().await.map(Some),
        }
    }
}

/// One request waiting for its outcome; dropping it forgets the wait.
struct Asked {
    core: Rc<RefCell<Core>>,
    request: u64,
}

impl Asked {
    async fn outcome(&self) -> Result<Adjusted, AdjustError> {
        poll_fn(|cx| {
            let mut c = self.core.borrow_mut();
            let failed = c.check();
            let Some(w) = c.adjusts.get_mut(&self.request) else {
                // Only `Asked::drop` removes the entry.
                unreachable!("adjust request {} forgotten while awaited", self.request);
            };
            if let Some(o) = w.outcome.take() {
                return Poll::Ready(o);
            }
            if let Err(e) = failed {
                return Poll::Ready(Err(e.into()));
            }
            w.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Asked {
    fn drop(&mut self) {
        if let Ok(mut c) = self.core.try_borrow_mut() {
            c.adjusts.remove(&self.request);
        }
    }
}

fn ask(core: &Rc<RefCell<Core>>, scope: Scope, target: Target) -> Result<Vec<Asked>, AdjustError> {
    let mut c = core.borrow_mut();
    c.check()?;
    let requests = c.engine.adjust_version(clock::now(), scope, target)?;
    let mut asked = Vec::with_capacity(requests.len());
    for r in requests {
        c.adjusts.insert(
            r.request,
            AdjustWait {
                group: r.group,
                outcome: None,
                waker: None,
            },
        );
        asked.push(Asked {
            core: Rc::clone(core),
            request: r.request,
        });
    }
    // The Engine may have ordered the outcome already (this node is the
    // sequencer): it is taken from the Engine here, after the waits exist.
    c.drain();
    Ok(asked)
}
