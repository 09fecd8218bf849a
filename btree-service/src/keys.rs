//! Key distributions for load generators: which item a client touches next.
//!
//! Items are numbered `0..n` (a load generator maps item numbers to keys). The distributions
//! are YCSB's request distributions:
//!
//! - [`Distribution::Uniform`]: every item equally likely.
//! - [`Distribution::Zipf`]: Zipfian ranks with exponent `theta` (YCSB's default 0.99), rank
//!   `r` drawn with probability proportional to `1 / (r + 1)^theta`, *scrambled*: rank `r` is
//!   item `perm(r)` for a fixed pseudo-random permutation of `0..n`, so popular items are
//!   scattered over the key space (YCSB's `ScrambledZipfianGenerator`).
//! - [`Distribution::ZipfUnscrambled`]: the same ranks, rank `r` is item `r`: the popular
//!   items are the lowest keys (YCSB's plain `ZipfianGenerator`).
//! - [`Distribution::Latest`]: a Zipfian rank counted back from the newest item (YCSB's
//!   `SkewedLatestGenerator`): recently inserted items are the popular ones.
//! - [`Distribution::Sequential`]: items in order, wrapping around (YCSB's
//!   `SequentialGenerator`); for inserts, the next key of a growing sequence.
//!
//! Zipfian ranks come from one of two samplers ([`ZipfSampler`]):
//!
//! - `Exact` (the default): rejection-inversion (Hörmann and Derflinger, 1996, as in Apache
//!   Commons), exactly the Zipfian pmf, O(1) per draw and per change of `n`, any `theta > 0`.
//! - `Ycsb`: YCSB's `ZipfianGenerator` as published (Gray et al., "Quickly generating
//!   billion-record synthetic databases", SIGMOD 1994), with YCSB's incremental zeta when the
//!   item count grows. Ranks 0 and 1 are exact; the others come from a continuous
//!   approximation of the inverse CDF that over-weights ranks 2 to 8 (rank 2 by 17% at
//!   `n` = 1000, `theta` = 0.99) and under-weights the tail by 2-3%: the tests measure it.
//!   It needs `0 < theta < 1` and computes `zeta(n)` in O(n).
//!
//! YCSB scrambles with `fnv64(rank) mod n`, which merges some items and leaves others
//! unreachable; here the scramble is a bijection (cycle-walking a keyed permutation of the
//! next power of two), so the scrambled pmf is exactly the Zipfian pmf, permuted.
//!
//! Everything is deterministic: a generator draws only from the RNG it is given.

use rand::RngExt;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A request distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    Uniform,
    Zipf,
    ZipfUnscrambled,
    Latest,
    Sequential,
}

impl Distribution {
    pub const ALL: [Distribution; 5] = [
        Distribution::Uniform,
        Distribution::Zipf,
        Distribution::ZipfUnscrambled,
        Distribution::Latest,
        Distribution::Sequential,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipf => "zipf",
            Distribution::ZipfUnscrambled => "zipf-unscrambled",
            Distribution::Latest => "latest",
            Distribution::Sequential => "sequential",
        }
    }

    /// Whether ranks are Zipfian (and `theta` matters).
    pub fn is_zipfian(self) -> bool {
        matches!(
            self,
            Distribution::Zipf | Distribution::ZipfUnscrambled | Distribution::Latest
        )
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Distribution::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown distribution {s:?}; one of {}",
                    Distribution::ALL.map(Distribution::name).join(", ")
                )
            })
    }
}

/// How Zipfian ranks are drawn (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ZipfSampler {
    #[default]
    Exact,
    Ycsb,
}

impl FromStr for ZipfSampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" => Ok(ZipfSampler::Exact),
            "ycsb" => Ok(ZipfSampler::Ycsb),
            other => Err(format!(
                "unknown Zipfian sampler {other:?}; one of exact, ycsb"
            )),
        }
    }
}

/// YCSB's default Zipfian constant.
pub const THETA_DEFAULT: f64 = 0.99;

/// A distribution with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KeyDistribution {
    pub distribution: Distribution,
    /// The Zipfian exponent (zipf, zipf-unscrambled, latest).
    pub theta: f64,
    pub sampler: ZipfSampler,
}

impl Default for KeyDistribution {
    fn default() -> Self {
        KeyDistribution::of(Distribution::Uniform)
    }
}

impl KeyDistribution {
    /// `distribution` with the default exponent and sampler.
    pub fn of(distribution: Distribution) -> Self {
        KeyDistribution {
            distribution,
            theta: THETA_DEFAULT,
            sampler: ZipfSampler::Exact,
        }
    }

    /// Checks the parameters, saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self.distribution.is_zipfian() {
            return Ok(());
        }
        match self.sampler {
            ZipfSampler::Exact if !(self.theta > 0.0 && self.theta <= 10.0) => {
                Err(format!("Zipfian theta {} must be in (0, 10]", self.theta))
            }
            ZipfSampler::Ycsb if !(self.theta > 0.0 && self.theta < 1.0) => Err(format!(
                "Zipfian theta {} must be in (0, 1) for YCSB's sampler (Gray et al.)",
                self.theta
            )),
            _ => Ok(()),
        }
    }

    /// A short label: `zipf(0.99)`, `uniform`.
    pub fn label(&self) -> String {
        if self.distribution.is_zipfian() {
            let s = match self.sampler {
                ZipfSampler::Exact => "",
                ZipfSampler::Ycsb => ", ycsb",
            };
            format!("{}({}{s})", self.distribution.name(), self.theta)
        } else {
            self.distribution.name().to_string()
        }
    }
}

/// `sum_{i=from+1}^{to} 1 / i^theta`.
fn zeta_part(from: u64, to: u64, theta: f64) -> f64 {
    (from + 1..=to).map(|i| (i as f64).powf(-theta)).sum()
}

/// Zipfian ranks over `0..n` (rank `r` with probability `(r + 1)^-theta / zeta(n)`).
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    method: Method,
}

#[derive(Clone, Debug)]
enum Method {
    /// Rejection-inversion, with its constants for the current `n`.
    Exact {
        h_integral_x1: f64,
        h_integral_n: f64,
        s: f64,
    },
    /// YCSB's ZipfianGenerator.
    Ycsb {
        zetan: f64,
        zeta2: f64,
        alpha: f64,
        eta: f64,
    },
}

impl Zipfian {
    /// Ranks over `0..n` (`n >= 1`) with exponent `theta` (checked by
    /// [`KeyDistribution::validate`]).
    pub fn new(n: u64, theta: f64, sampler: ZipfSampler) -> Self {
        let n = n.max(1);
        let method = match sampler {
            ZipfSampler::Exact => Method::Exact {
                h_integral_x1: 0.0,
                h_integral_n: 0.0,
                s: 0.0,
            },
            ZipfSampler::Ycsb => Method::Ycsb {
                zetan: zeta_part(0, n, theta),
                zeta2: zeta_part(0, 2, theta),
                alpha: 1.0 / (1.0 - theta),
                eta: 0.0,
            },
        };
        let mut z = Zipfian { n, theta, method };
        z.derive();
        z
    }

    /// The number of ranks.
    pub fn items(&self) -> u64 {
        self.n
    }

    /// Grows (or shrinks) the ranks to `0..n`. The YCSB sampler adds the new terms of zeta
    /// incrementally as YCSB does (and recomputes it on a shrink).
    pub fn set_items(&mut self, n: u64) {
        let n = n.max(1);
        if n == self.n {
            return;
        }
        if let Method::Ycsb { zetan, .. } = &mut self.method {
            if n > self.n {
                *zetan += zeta_part(self.n, n, self.theta);
            } else {
                *zetan = zeta_part(0, n, self.theta);
            }
        }
        self.n = n;
        self.derive();
    }

    fn derive(&mut self) {
        let (n, theta) = (self.n as f64, self.theta);
        match &mut self.method {
            Method::Exact {
                h_integral_x1,
                h_integral_n,
                s,
            } => {
                *h_integral_x1 = h_integral(1.5, theta) - 1.0;
                *h_integral_n = h_integral(n + 0.5, theta);
                *s = 2.0 - h_integral_inverse(h_integral(2.5, theta) - h(2.0, theta), theta);
            }
            Method::Ycsb {
                zetan, zeta2, eta, ..
            } => {
                *eta = (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - *zeta2 / *zetan);
            }
        }
    }

    /// A rank in `0..n`.
    pub fn sample<R: RngExt + ?Sized>(&self, rng: &mut R) -> u64 {
        let n = self.n;
        match self.method {
            Method::Exact {
                h_integral_x1,
                h_integral_n,
                s,
            } => loop {
                // Ranks 1..=n here; the caller sees 0..n.
                let u = h_integral_n + rng.random::<f64>() * (h_integral_x1 - h_integral_n);
                let x = h_integral_inverse(u, self.theta);
                let k = ((x + 0.5) as u64).clamp(1, n);
                let kf = k as f64;
                if kf - x <= s || u >= h_integral(kf + 0.5, self.theta) - h(kf, self.theta) {
                    return k - 1;
                }
            },
            Method::Ycsb {
                zetan, alpha, eta, ..
            } => {
                let u = rng.random::<f64>();
                let uz = u * zetan;
                if uz < 1.0 || n == 1 {
                    return 0;
                }
                if uz < 1.0 + 0.5f64.powf(self.theta) || n == 2 {
                    return 1;
                }
                ((n as f64 * (eta * u - eta + 1.0).powf(alpha)) as u64).min(n - 1)
            }
        }
    }
}

/// `x^-s`.
fn h(x: f64, s: f64) -> f64 {
    (-s * x.ln()).exp()
}

/// `H(x) = (x^(1-s) - 1) / (1 - s)` (`ln x` at `s` = 1), an antiderivative of `h`.
fn h_integral(x: f64, s: f64) -> f64 {
    let log_x = x.ln();
    helper2((1.0 - s) * log_x) * log_x
}

/// The inverse of [`h_integral`].
fn h_integral_inverse(x: f64, s: f64) -> f64 {
    let t = (x * (1.0 - s)).max(-1.0);
    (helper1(t) * x).exp()
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// A fixed pseudo-random bijection of `0..n`: a keyed permutation of the next power of two,
/// walked until it lands below `n` (at most a few steps on average).
#[derive(Clone, Copy, Debug)]
pub struct Permutation {
    n: u64,
    mask: u64,
    shift: u32,
}

/// Odd multipliers and constants of the permutation's rounds.
const ROUNDS: [(u64, u64); 3] = [
    (0x9e37_79b9_7f4a_7c15, 0x6a09_e667_f3bc_c909),
    (0xbf58_476d_1ce4_e5b9, 0xbb67_ae85_84ca_a73b),
    (0x94d0_49bb_1331_11eb, 0x3c6e_f372_fe94_f82b),
];

impl Permutation {
    pub fn new(n: u64) -> Self {
        let n = n.max(1);
        let bits = (64 - (n - 1).leading_zeros()).max(2);
        Permutation {
            n,
            mask: if bits >= 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            },
            shift: bits.div_ceil(2),
        }
    }

    /// One step on `0..2^bits`: every operation is a bijection there (odd multiplication,
    /// addition and xor-shift modulo a power of two).
    fn step(&self, mut x: u64) -> u64 {
        for (m, c) in ROUNDS {
            x = x.wrapping_mul(m).wrapping_add(c) & self.mask;
            x ^= x >> self.shift;
        }
        x
    }

    /// The image of `x` (`x < n`).
    pub fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.step(x);
        while y >= self.n {
            y = self.step(y);
        }
        y
    }
}

/// Draws items of one distribution. `Latest` and `Sequential` depend on the item count,
/// which the owner keeps up to date ([`ItemChooser::set_items`]).
#[derive(Clone, Debug)]
pub struct ItemChooser {
    spec: KeyDistribution,
    n: u64,
    zipf: Option<Zipfian>,
    perm: Option<Permutation>,
    next: u64,
}

impl ItemChooser {
    /// Items `0..n`; `Sequential` starts at item `start % n`.
    pub fn new(spec: KeyDistribution, n: u64, start: u64) -> Self {
        let n = n.max(1);
        ItemChooser {
            zipf: spec
                .distribution
                .is_zipfian()
                .then(|| Zipfian::new(n, spec.theta, spec.sampler)),
            perm: (spec.distribution == Distribution::Zipf).then(|| Permutation::new(n)),
            spec,
            n,
            next: start % n,
        }
    }

    pub fn items(&self) -> u64 {
        self.n
    }

    /// The items are now `0..n` (the scrambled Zipfian keeps its permutation: scrambling is
    /// over the items that existed at the start).
    pub fn set_items(&mut self, n: u64) {
        self.n = n.max(1);
        if self.spec.distribution == Distribution::Latest {
            if let Some(z) = &mut self.zipf {
                z.set_items(self.n);
            }
        }
    }

    /// The next item, in `0..n`.
    pub fn next<R: RngExt + ?Sized>(&mut self, rng: &mut R) -> u64 {
        let n = self.n;
        match self.spec.distribution {
            Distribution::Uniform => rng.random_range(0..n),
            Distribution::Zipf => {
                let z = self.zipf.as_ref().expect("zipfian");
                let p = self.perm.as_ref().expect("permutation");
                // The permutation covers the starting items; later items are reached unscrambled.
                let r = z.sample(rng);
                if r < p.n {
                    p.apply(r)
                } else {
                    r
                }
            }
            Distribution::ZipfUnscrambled => self.zipf.as_ref().expect("zipfian").sample(rng),
            Distribution::Latest => {
                let r = self.zipf.as_ref().expect("zipfian").sample(rng);
                n - 1 - r.min(n - 1)
            }
            Distribution::Sequential => {
                let i = self.next % n;
                self.next = (i + 1) % n;
                i
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The samplers against the exact Zipfian pmf by a chi-square goodness-of-fit test at
    //! p = 0.001 (fixed seeds, so a run is reproducible), with a negative control: YCSB's
    //! sampler, which approximates the pmf, must fail the same test where its approximation
    //! is off, and pass against the pmf it actually implements.
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The exact pmf over ranks `0..n`.
    fn pmf(n: u64, theta: f64) -> Vec<f64> {
        let w: Vec<f64> = (1..=n).map(|i| (i as f64).powf(-theta)).collect();
        let z: f64 = w.iter().sum();
        w.into_iter().map(|x| x / z).collect()
    }

    /// The pmf YCSB's sampler implements: its CDF `P(rank < x)` is `zeta(x) / zeta(n)` for
    /// `x <= 2` and `((x / n)^(1 - theta) - 1 + eta) / eta` above.
    fn ycsb_pmf(n: u64, theta: f64) -> Vec<f64> {
        let zetan = zeta_part(0, n, theta);
        let zeta2 = zeta_part(0, 2, theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        let cdf = |x: u64| {
            if x <= 2 {
                zeta_part(0, x, theta) / zetan
            } else {
                (((x as f64 / n as f64).powf(1.0 - theta)) - 1.0 + eta) / eta
            }
        };
        (0..n).map(|r| cdf(r + 1) - cdf(r)).collect()
    }

    /// Upper 0.1% point of chi-square with `k` degrees of freedom (Wilson-Hilferty).
    fn chi2_critical(k: usize) -> f64 {
        let k = k as f64;
        let z = 3.090_232; // the standard normal's 0.999 quantile
        k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
    }

    /// Chi-square statistic and degrees of freedom of `counts` against `expected`
    /// probabilities, with ranks pooled into bins of at least 20 expected draws.
    fn chi2(counts: &[u64], expected: &[f64]) -> (f64, usize) {
        let total: u64 = counts.iter().sum();
        let (mut stat, mut bins) = (0.0, 0usize);
        let (mut obs, mut exp) = (0.0, 0.0);
        for (c, p) in counts.iter().zip(expected) {
            obs += *c as f64;
            exp += p * total as f64;
            if exp >= 20.0 {
                stat += (obs - exp).powi(2) / exp;
                bins += 1;
                obs = 0.0;
                exp = 0.0;
            }
        }
        if exp > 0.0 {
            stat += (obs - exp).powi(2) / exp.max(1e-9);
            bins += 1;
        }
        (stat, bins.saturating_sub(1))
    }

    fn ranks(z: &Zipfian, draws: usize, seed: u64) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u64; z.items() as usize];
        for _ in 0..draws {
            counts[z.sample(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn exact_sampler_fits_the_zipfian_pmf() {
        for (n, theta, seed) in [
            (1000u64, 0.99, 1u64),
            (50, 0.99, 2),
            (2000, 0.5, 3),
            (100, 1.0, 4),
            (300, 1.5, 5),
            (3, 0.99, 6),
        ] {
            let z = Zipfian::new(n, theta, ZipfSampler::Exact);
            let counts = ranks(&z, 200_000, seed);
            let (stat, df) = chi2(&counts, &pmf(n, theta));
            let crit = chi2_critical(df.max(1));
            assert!(
                stat < crit,
                "n {n}, theta {theta}: chi2 {stat:.1} over {df} df, critical {crit:.1}"
            );
        }
    }

    #[test]
    fn ycsb_sampler_implements_gray_et_al_and_misses_the_exact_pmf() {
        let (n, theta) = (1000u64, 0.99);
        let z = Zipfian::new(n, theta, ZipfSampler::Ycsb);
        let counts = ranks(&z, 200_000, 7);
        // It fits the pmf Gray et al.'s formula implies...
        let (stat, df) = chi2(&counts, &ycsb_pmf(n, theta));
        assert!(stat < chi2_critical(df), "chi2 {stat:.1} over {df} df");
        // ... ranks 0 and 1 exactly as Zipf's ...
        let p = pmf(n, theta);
        for r in 0..2 {
            let got = counts[r] as f64 / 200_000.0;
            assert!((got - p[r]).abs() < 0.005, "rank {r}: {got} vs {}", p[r]);
        }
        // ... but not the exact pmf: this is what the chi-square test catches.
        let (stat, df) = chi2(&counts, &p);
        assert!(
            stat > chi2_critical(df),
            "the control must fail: chi2 {stat:.1} over {df} df"
        );
        let over = ycsb_pmf(n, theta)[2] / p[2] - 1.0;
        assert!(
            (0.15..0.2).contains(&over),
            "rank 2 over-weighted by {over}"
        );
    }

    #[test]
    fn ycsb_zeta_grows_incrementally_like_a_fresh_generator() {
        let mut z = Zipfian::new(100, 0.99, ZipfSampler::Ycsb);
        z.set_items(5000);
        let fresh = Zipfian::new(5000, 0.99, ZipfSampler::Ycsb);
        let (
            Method::Ycsb {
                zetan: a, eta: ea, ..
            },
            Method::Ycsb {
                zetan: b, eta: eb, ..
            },
        ) = (&z.method, &fresh.method)
        else {
            unreachable!()
        };
        assert!((a - b).abs() < 1e-9 && (ea - eb).abs() < 1e-9);
        let mut e = Zipfian::new(100, 0.99, ZipfSampler::Exact);
        e.set_items(5000);
        let counts = ranks(&e, 100_000, 8);
        let (stat, df) = chi2(&counts, &pmf(5000, 0.99));
        assert!(stat < chi2_critical(df));
    }

    #[test]
    fn permutations_are_bijections() {
        for n in [1u64, 2, 3, 7, 8, 1000, (1 << 16) + 3] {
            let p = Permutation::new(n);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.apply(x);
                assert!(y < n && !seen[y as usize], "n {n}: {x} -> {y}");
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn scrambling_spreads_the_popular_items_and_unscrambled_keeps_them_low() {
        let n = 1_000_000;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut share_low = |d: Distribution| {
            let mut c = ItemChooser::new(KeyDistribution::of(d), n, 0);
            let low = (0..20_000).filter(|_| c.next(&mut rng) < n / 2).count();
            low as f64 / 20_000.0
        };
        let unscrambled = share_low(Distribution::ZipfUnscrambled);
        let scrambled = share_low(Distribution::Zipf);
        assert!(unscrambled > 0.9, "{unscrambled}");
        assert!((0.3..0.7).contains(&scrambled), "{scrambled}");
    }

    #[test]
    fn latest_favours_the_newest_items_and_follows_growth() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let mut c = ItemChooser::new(KeyDistribution::of(Distribution::Latest), 1000, 0);
        let newest = (0..10_000).filter(|_| c.next(&mut rng) == 999).count();
        assert!((1000..1600).contains(&newest), "{newest}");
        c.set_items(1500);
        let draws: Vec<u64> = (0..10_000).map(|_| c.next(&mut rng)).collect();
        assert!(draws.iter().all(|&i| i < 1500));
        assert!(draws.iter().filter(|&&i| i == 1499).count() > 1000);
    }

    #[test]
    fn sequential_cycles_and_everything_is_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut c = ItemChooser::new(KeyDistribution::of(Distribution::Sequential), 4, 6);
        let got: Vec<u64> = (0..6).map(|_| c.next(&mut rng)).collect();
        assert_eq!(got, [2, 3, 0, 1, 2, 3]);
        for d in Distribution::ALL {
            let draw = |seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut c = ItemChooser::new(KeyDistribution::of(d), 10_000, 0);
                (0..100).map(|_| c.next(&mut rng)).collect::<Vec<_>>()
            };
            assert_eq!(draw(5), draw(5), "{d}");
        }
    }

    #[test]
    fn names_parse_and_bad_parameters_say_why() {
        for d in Distribution::ALL {
            assert_eq!(d.name().parse::<Distribution>(), Ok(d));
        }
        assert!("pareto"
            .parse::<Distribution>()
            .unwrap_err()
            .contains("one of"));
        let bad = |theta, sampler| KeyDistribution {
            distribution: Distribution::Zipf,
            theta,
            sampler,
        };
        assert!(bad(0.0, ZipfSampler::Exact).validate().is_err());
        assert!(bad(1.2, ZipfSampler::Exact).validate().is_ok());
        assert!(bad(1.0, ZipfSampler::Ycsb)
            .validate()
            .unwrap_err()
            .contains("(0, 1)"));
        assert_eq!(bad(0.99, ZipfSampler::Exact).label(), "zipf(0.99)");
    }
}
