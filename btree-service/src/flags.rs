//! Command-line flags the load tools share: key distributions and rebalancing
//! (`#[command(flatten)]` them into a clap parser).

use crate::keys::{Distribution, KeyDistribution, ZipfSampler, THETA_DEFAULT};
use crate::load::RebalanceSpec;
use crate::rebalance::RebalancePolicy;
use std::time::Duration;

/// Which keys the load touches.
#[derive(clap::Args, Clone, Debug)]
pub struct KeyFlags {
    /// Key distribution: uniform, zipf (scrambled), zipf-unscrambled, latest, sequential.
    #[arg(long, default_value = "uniform")]
    pub distribution: Distribution,
    /// Zipfian exponent (zipf, zipf-unscrambled, latest).
    #[arg(long, default_value_t = THETA_DEFAULT)]
    pub zipf_theta: f64,
    /// Zipfian sampler: exact (rejection-inversion) or ycsb (YCSB's Gray et al. generator).
    #[arg(long, default_value = "exact")]
    pub zipf_sampler: ZipfSampler,
}

impl KeyFlags {
    /// The distribution, checked.
    pub fn spec(&self) -> Result<KeyDistribution, String> {
        let d = KeyDistribution {
            distribution: self.distribution,
            theta: self.zipf_theta,
            sampler: self.zipf_sampler,
        };
        d.validate().map(|()| d)
    }
}

/// Whether and how often the load asks the replicas to rebalance.
#[derive(clap::Args, Clone, Debug)]
pub struct RebalanceFlags {
    /// Multicast a Rebalance every this many milliseconds (0: never). The replicas decide
    /// what to move from their replicated load counters.
    #[arg(long, default_value_t = 0)]
    pub rebalance_every_ms: u64,
    /// Rebalance when the busiest worker carries more than this percent above the mean.
    #[arg(long, default_value_t = RebalancePolicy::default().tolerance_pct)]
    pub rebalance_tolerance_pct: u32,
    /// Keys per stripe when the rebalancer stripes a range that takes increasing keys.
    #[arg(long, default_value_t = RebalancePolicy::default().stripe_keys)]
    pub stripe_keys: u64,
}

impl RebalanceFlags {
    /// The rebalancing rounds asked for, if any.
    pub fn spec(&self) -> Result<Option<RebalanceSpec>, String> {
        if self.rebalance_every_ms == 0 {
            return Ok(None);
        }
        if self.stripe_keys == 0 {
            return Err("--stripe-keys must be at least 1".into());
        }
        Ok(Some(RebalanceSpec {
            every: Duration::from_millis(self.rebalance_every_ms),
            policy: RebalancePolicy {
                tolerance_pct: self.rebalance_tolerance_pct,
                stripe_keys: self.stripe_keys,
                ..RebalancePolicy::default()
            },
        }))
    }
}
