//! The hook on fresh upstream answers: what a name resolved to, after the policy and the
//! CNAME-cloaking check (the addresses learner looks at it). Cached answers are not handed
//! over again: they were when they were fresh.

use std::sync::Arc;

use hickory_proto::rr::Record;

use crate::policy::category::{CategorySet, CategoryTable};

pub trait AnswerObserver: Send + Sync {
    /// `answers` came from an upstream for a name whose matched categories (its CNAME
    /// chain's included) are `categories`, indexes into `table`. Must not block.
    fn answered(&self, table: &Arc<CategoryTable>, categories: CategorySet, answers: &[Record]);
}
