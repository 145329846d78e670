//! Distributions as mergeable quantile sketches, and the figures a report gives of them.

use serde::Serialize;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// The relative error of every percentile in a report, by default: a reported p95 of
/// `v` means the true p95 lies within `v / (1 + e)` and `v / (1 - e)`.
pub const DEFAULT_RELATIVE_ERROR: f64 = 0.01;

/// Bins a sketch may grow to before it folds its lowest bins together. With 1 % relative
/// error, 1024 bins span a ratio of about 8·10⁸ between the smallest and largest value
/// kept apart (a microsecond to ten minutes), so the percentiles a report gives are
/// within the bound for any realistic duration, score or ratio.
const MAX_BINS: u32 = 1024;

/// Values at or below this are counted as zero.
const MIN_VALUE: f64 = 1e-9;

/// Values a distribution keeps as they are before it turns into a sketch.
const EXACT_VALUES: usize = 32;

/// One distribution. Up to [`EXACT_VALUES`] values are kept as they are (their figures
/// are exact, and a per-agent bucket with a handful of values costs a few hundred bytes);
/// beyond that they go into a DDSketch (Masson, Rim and Lee, VLDB 2019), whose
/// percentiles are within the relative error. Both use the same rank rule, so merging
/// buckets gives the figures of the union.
#[derive(Clone, Default)]
pub(crate) struct Distribution(Inner);

#[derive(Clone, Default)]
enum Inner {
    #[default]
    Empty,
    Exact(Vec<f64>),
    Sketch(Box<DDSketch>),
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("count", &self.count())
            .finish()
    }
}

pub(crate) fn sketch_config(relative_error: f64) -> SketchConfig {
    SketchConfig::new(relative_error, MAX_BINS, MIN_VALUE)
}

fn sketch_of(config: &SketchConfig, values: &[f64]) -> Box<DDSketch> {
    let mut sketch = Box::new(DDSketch::new(*config));
    for v in values {
        sketch.add(*v);
    }
    sketch
}

impl Distribution {
    /// Adds one value; values that are not finite are ignored (validation refused them
    /// before they were stored).
    pub(crate) fn add(&mut self, config: &SketchConfig, value: f64) {
        if !value.is_finite() {
            return;
        }
        match &mut self.0 {
            Inner::Empty => self.0 = Inner::Exact(vec![value]),
            Inner::Exact(values) if values.len() < EXACT_VALUES => values.push(value),
            Inner::Exact(values) => {
                let mut sketch = sketch_of(config, values);
                sketch.add(value);
                self.0 = Inner::Sketch(sketch);
            }
            Inner::Sketch(sketch) => sketch.add(value),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        match &self.0 {
            Inner::Empty => 0,
            Inner::Exact(values) => values.len() as u64,
            Inner::Sketch(sketch) => sketch.count() as u64,
        }
    }

    /// Folds `other` in, as if its values had been added here.
    pub(crate) fn merge(&mut self, config: &SketchConfig, other: &Distribution) {
        match (&mut self.0, &other.0) {
            (_, Inner::Empty) => {}
            (Inner::Empty, theirs) => self.0 = theirs.clone(),
            (Inner::Exact(ours), Inner::Exact(theirs))
                if ours.len() + theirs.len() <= EXACT_VALUES =>
            {
                ours.extend_from_slice(theirs);
            }
            (Inner::Exact(ours), Inner::Exact(theirs)) => {
                let mut sketch = sketch_of(config, ours);
                for v in theirs {
                    sketch.add(*v);
                }
                self.0 = Inner::Sketch(sketch);
            }
            (Inner::Sketch(ours), Inner::Exact(theirs)) => {
                for v in theirs {
                    ours.add(*v);
                }
            }
            (Inner::Exact(ours), Inner::Sketch(theirs)) => {
                let mut sketch = theirs.clone();
                for v in ours.iter() {
                    sketch.add(*v);
                }
                self.0 = Inner::Sketch(sketch);
            }
            (Inner::Sketch(ours), Inner::Sketch(theirs)) => {
                // Both come from one `sketch_config`, so the merge cannot refuse them.
                let _ = ours.merge(theirs);
            }
        }
    }

    /// Heap bytes held, for the memory figure of the aggregates.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Inner::Empty => 0,
            Inner::Exact(values) => values.capacity() * std::mem::size_of::<f64>(),
            Inner::Sketch(s) => {
                std::mem::size_of::<DDSketch>() + s.length() * std::mem::size_of::<u64>()
            }
        }
    }

    pub(crate) fn summary(&self) -> Option<Summary> {
        match &self.0 {
            Inner::Empty => None,
            Inner::Exact(values) => {
                let mut sorted = values.clone();
                sorted.sort_by(f64::total_cmp);
                let n = sorted.len();
                let q = |p: f64| sorted[(p * (n - 1) as f64) as usize];
                Some(Summary {
                    count: n as u64,
                    min: sorted[0],
                    max: sorted[n - 1],
                    mean: sorted.iter().sum::<f64>() / n as f64,
                    p50: q(0.50),
                    p90: q(0.90),
                    p95: q(0.95),
                    p99: q(0.99),
                })
            }
            Inner::Sketch(s) => {
                let count = s.count() as u64;
                let q = |p: f64| s.quantile(p).ok().flatten().unwrap_or(f64::NAN);
                Some(Summary {
                    count,
                    min: s.min().unwrap_or(f64::NAN),
                    max: s.max().unwrap_or(f64::NAN),
                    mean: s.sum().unwrap_or(f64::NAN) / count.max(1) as f64,
                    p50: q(0.50),
                    p90: q(0.90),
                    p95: q(0.95),
                    p99: q(0.99),
                })
            }
        }
    }
}

/// What a report gives of one distribution. `min`, `max` and `mean` are exact;
/// the percentiles are within the configured relative error
/// ([`DEFAULT_RELATIVE_ERROR`] unless `analytics.relative_error` says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Values.
    pub count: u64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 99th percentile.
    pub p99: f64,
}

/// Count, sum, min and max of a series (RL training metrics can be negative, so they are
/// kept as moments rather than sketched).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Moments {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Moments {
    pub(crate) fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }

    pub(crate) fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub(crate) fn series(&self) -> Option<Series> {
        (self.count > 0).then(|| Series {
            count: self.count,
            mean: self.sum / self.count as f64,
            min: self.min,
            max: self.max,
        })
    }
}

/// What a report gives of a series: exact count, mean, min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Series {
    /// Values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_an_empty_distribution_is_none() {
        assert!(Distribution::default().summary().is_none());
        assert_eq!(Distribution::default().heap_bytes(), 0);
    }

    #[test]
    fn percentiles_are_within_the_relative_error() {
        let config = sketch_config(DEFAULT_RELATIVE_ERROR);
        let mut d = Distribution::default();
        for v in 1..=1000 {
            d.add(&config, f64::from(v));
        }
        let s = d.summary().expect("values were added");
        assert_eq!(s.count, 1000);
        assert_eq!((s.min, s.max), (1.0, 1000.0));
        for (got, exact) in [(s.p50, 500.0), (s.p90, 900.0), (s.p99, 990.0)] {
            assert!(
                (got - exact).abs() <= exact * 0.011,
                "{got} is not within 1 % of {exact}"
            );
        }
    }

    #[test]
    fn moments_merge_like_one_series() {
        let mut a = Moments::default();
        let mut b = Moments::default();
        let mut all = Moments::default();
        for v in [-2.0, 5.0, 1.5] {
            a.add(v);
            all.add(v);
        }
        for v in [7.0, -9.0] {
            b.add(v);
            all.add(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(
            a.series().map(|s| (s.min, s.max, s.count)),
            Some((-9.0, 7.0, 5))
        );
    }
}
