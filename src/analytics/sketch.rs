//! Distributions as mergeable quantile sketches, and the figures a report gives of them.
//!
//! The sketch is a DDSketch (Masson, Rim and Lee, VLDB 2019) with a dense store that
//! collapses its lowest bins: a value `v > 0` falls in bin `floor(ln v / ln γ)` with
//! `γ = (1 + e) / (1 − e)`, and a bin is reported as `2γᵏ⁺¹ / (γ + 1)`, within the
//! relative error `e` of every value in it. The bin of each value is computed once, when
//! it is added, and kept beside the exact values of a small distribution; merging
//! distributions for a report only adds bin counts, it never takes a logarithm.

use serde::Serialize;

/// The relative error of every percentile in a report, by default: a reported p95 of
/// `v` means the true p95 lies within `v / (1 + e)` and `v / (1 - e)`.
pub const DEFAULT_RELATIVE_ERROR: f64 = 0.01;

/// Bins a sketch may grow to before it folds its lowest bins together. With 1 % relative
/// error, 1024 bins span a ratio of about 8·10⁸ between the smallest and largest value
/// kept apart (a microsecond to ten minutes), so the percentiles a report gives are
/// within the bound for any realistic duration, score or ratio.
const MAX_BINS: i32 = 1024;

/// Values at or below this (in magnitude) are counted as zero.
const MIN_VALUE: f64 = 1e-9;

/// Values a distribution keeps as they are before it turns into a sketch.
const EXACT_VALUES: usize = 32;

/// Where values go: the bin of a value and the value a bin stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mapping {
    gamma_ln: f64,
    /// `2γ / (γ + 1)`: a bin's value over its lower edge.
    midpoint: f64,
}

impl Mapping {
    /// The mapping whose bins are within `relative_error` of every value in them.
    pub(crate) fn new(relative_error: f64) -> Mapping {
        let gamma = (1.0 + relative_error) / (1.0 - relative_error);
        Mapping {
            gamma_ln: gamma.ln(),
            midpoint: 2.0 * gamma / (1.0 + gamma),
        }
    }

    /// The bin of `|value|`; meaningful when `|value| > MIN_VALUE`.
    fn key(&self, value: f64) -> i32 {
        let key = (value.abs().ln() / self.gamma_ln).floor();
        // Finite values give keys within ±36,000 at 1 % (saturating cast otherwise).
        key as i32
    }

    /// The value bin `key` stands for.
    fn value(&self, key: i32) -> f64 {
        (f64::from(key) * self.gamma_ln).exp() * self.midpoint
    }
}

/// One value and its bin, computed once when it is added.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    value: f64,
    key: i32,
}

/// One distribution. Up to [`EXACT_VALUES`] values are kept as they are (their figures
/// are exact, and a per-agent bucket with a handful of values costs a few hundred bytes);
/// beyond that they go into a sketch, whose percentiles are within the relative error.
/// Both use the same rank rule, so merging buckets gives the figures of the union.
#[derive(Clone, Default)]
pub(crate) struct Distribution(Inner);

#[derive(Clone, Default)]
enum Inner {
    #[default]
    Empty,
    Exact(Vec<Sample>),
    Sketch(Box<Sketch>),
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distribution")
            .field("count", &self.count())
            .finish()
    }
}

/// Bin counts over consecutive keys: `counts[i]` values fell in bin `offset + i`. At most
/// [`MAX_BINS`] are kept: keys below the lowest kept are counted in the lowest.
#[derive(Debug, Clone, Default)]
struct Bins {
    counts: Vec<u64>,
    offset: i32,
}

impl Bins {
    /// The highest key kept (meaningless when empty).
    fn top(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    /// Makes room for keys `lo..=hi`; when the span would exceed [`MAX_BINS`], the lowest
    /// bins are folded into the lowest one kept.
    fn cover(&mut self, lo: i32, hi: i32) {
        let (lo, hi) = if self.counts.is_empty() {
            (lo, hi)
        } else {
            (lo.min(self.offset), hi.max(self.top()))
        };
        let lo = lo.max(hi - (MAX_BINS - 1));
        if self.counts.is_empty() || lo < self.offset {
            let grow = if self.counts.is_empty() {
                0
            } else {
                (self.offset - lo) as usize
            };
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
        } else if lo > self.offset {
            let cut = ((lo - self.offset) as usize).min(self.counts.len());
            let folded: u64 = self.counts.drain(..cut).sum();
            self.counts.resize((hi - lo) as usize + 1, 0);
            self.counts[0] += folded;
        }
        self.offset = lo;
        self.counts.resize((hi - lo) as usize + 1, 0);
    }

    /// The index of `key`'s bin (the lowest for a key below the bins kept).
    fn index(&self, key: i32) -> usize {
        (key.max(self.offset) - self.offset) as usize
    }

    fn add(&mut self, key: i32) {
        if self.counts.is_empty() || key < self.offset || key > self.top() {
            self.cover(key, key);
        }
        let i = self.index(key);
        self.counts[i] += 1;
    }

    /// Adds the bins of `samples`, whose keys are within `lo..=hi`.
    fn add_all(&mut self, lo: i32, hi: i32, samples: &[Sample]) {
        if self.counts.is_empty() || lo < self.offset || hi > self.top() {
            self.cover(lo, hi);
        }
        let offset = self.offset;
        for s in samples {
            if let Some(n) = self.counts.get_mut((s.key.max(offset) - offset) as usize) {
                *n += 1;
            }
        }
    }

    fn merge(&mut self, other: &Bins) {
        if other.counts.is_empty() {
            return;
        }
        self.cover(other.offset, other.top());
        for (key, n) in (other.offset..).zip(&other.counts) {
            let i = self.index(key);
            self.counts[i] += n;
        }
    }

    /// `(key, count)` of each bin, lowest key first.
    fn ascending(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .map(move |(i, n)| (offset + i as i32, *n))
    }

    fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<u64>()
    }
}

/// A distribution past [`EXACT_VALUES`]: exact count, sum, min and max, and the bins.
#[derive(Debug, Clone)]
struct Sketch {
    positive: Bins,
    /// Negative values by the bin of their magnitude.
    negative: Bins,
    zeros: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Sketch {
    fn of(samples: &[Sample]) -> Box<Sketch> {
        let mut sketch = Box::new(Sketch {
            positive: Bins::default(),
            negative: Bins::default(),
            zeros: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        });
        sketch.extend(samples);
        sketch
    }

    /// Adds `samples`: their figures first (in local accumulators, so the loads of one
    /// distribution's samples do not wait on each other), then their bins, with the
    /// range made room for once.
    fn extend(&mut self, samples: &[Sample]) {
        let (mut sum, mut min, mut max) = (self.sum, self.min, self.max);
        let (mut lo, mut hi) = (i32::MAX, i32::MIN);
        let mut positive = true;
        for s in samples {
            sum += s.value;
            min = min.min(s.value);
            max = max.max(s.value);
            lo = lo.min(s.key);
            hi = hi.max(s.key);
            positive &= s.value > MIN_VALUE;
        }
        (self.sum, self.min, self.max) = (sum, min, max);
        self.count += samples.len() as u64;
        if positive {
            self.positive.add_all(lo, hi, samples);
            return;
        }
        for s in samples {
            if s.value > MIN_VALUE {
                self.positive.add(s.key);
            } else if s.value < -MIN_VALUE {
                self.negative.add(s.key);
            } else {
                self.zeros += 1;
            }
        }
    }

    fn merge(&mut self, other: &Sketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zeros += other.zeros;
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The values at ranks `floor(q × (count − 1))` of each `q` in `qs` (ascending), in
    /// one pass over the bins; each within the relative error, and within `min..=max`.
    fn quantiles<const N: usize>(&self, mapping: &Mapping, qs: [f64; N]) -> [f64; N] {
        let last = self.count.saturating_sub(1) as f64;
        let ranks = qs.map(|q| (q * last) as u64);
        // The bin (and sign) of each rank first; the values after, one `exp` each.
        let mut found = [(0, 0.0); N];
        let mut next = 0;
        let mut seen = 0u64;
        // Most negative first: the negative bins by descending magnitude.
        let bins = self
            .negative
            .ascending()
            .rev()
            .map(|(key, n)| (key, n, -1.0))
            .chain(std::iter::once((0, self.zeros, 0.0)))
            .chain(self.positive.ascending().map(|(key, n)| (key, n, 1.0)));
        for (key, n, sign) in bins {
            seen += n;
            while next < N && ranks[next] < seen {
                found[next] = (key, sign);
                next += 1;
            }
            if next == N {
                break;
            }
        }
        found.map(|(key, sign)| {
            let value = if sign == 0.0 {
                0.0
            } else {
                sign * mapping.value(key)
            };
            value.max(self.min).min(self.max)
        })
    }
}

impl Distribution {
    /// Adds one value, computing its bin; values that are not finite are ignored
    /// (validation refused them before they were stored).
    pub(crate) fn add(&mut self, mapping: &Mapping, value: f64) {
        if !value.is_finite() {
            return;
        }
        let key = if value.abs() > MIN_VALUE {
            mapping.key(value)
        } else {
            0
        };
        let sample = Sample { value, key };
        match &mut self.0 {
            Inner::Empty => self.0 = Inner::Exact(vec![sample]),
            Inner::Exact(values) if values.len() < EXACT_VALUES => values.push(sample),
            Inner::Exact(values) => {
                let mut sketch = Sketch::of(values);
                sketch.extend(&[sample]);
                self.0 = Inner::Sketch(sketch);
            }
            Inner::Sketch(sketch) => sketch.extend(&[sample]),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        match &self.0 {
            Inner::Empty => 0,
            Inner::Exact(values) => values.len() as u64,
            Inner::Sketch(sketch) => sketch.count,
        }
    }

    /// Folds `other` in, as if its values had been added here: bin counts are added, no
    /// bin is computed again.
    pub(crate) fn merge(&mut self, other: &Distribution) {
        match (&mut self.0, &other.0) {
            (_, Inner::Empty) => {}
            (Inner::Empty, theirs) => self.0 = theirs.clone(),
            (Inner::Exact(ours), Inner::Exact(theirs))
                if ours.len() + theirs.len() <= EXACT_VALUES =>
            {
                ours.extend_from_slice(theirs);
            }
            (Inner::Exact(ours), Inner::Exact(theirs)) => {
                let mut sketch = Sketch::of(ours);
                sketch.extend(theirs);
                self.0 = Inner::Sketch(sketch);
            }
            (Inner::Sketch(ours), Inner::Exact(theirs)) => ours.extend(theirs),
            (Inner::Exact(ours), Inner::Sketch(theirs)) => {
                let mut sketch = theirs.clone();
                sketch.extend(ours);
                self.0 = Inner::Sketch(sketch);
            }
            (Inner::Sketch(ours), Inner::Sketch(theirs)) => ours.merge(theirs),
        }
    }

    /// Heap bytes held, for the memory figure of the aggregates.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Inner::Empty => 0,
            Inner::Exact(values) => values.capacity() * std::mem::size_of::<Sample>(),
            Inner::Sketch(s) => {
                std::mem::size_of::<Sketch>() + s.positive.heap_bytes() + s.negative.heap_bytes()
            }
        }
    }

    pub(crate) fn summary(&self, mapping: &Mapping) -> Option<Summary> {
        match &self.0 {
            Inner::Empty => None,
            Inner::Exact(values) => {
                let mut sorted: Vec<f64> = values.iter().map(|s| s.value).collect();
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
                let [p50, p90, p95, p99] = s.quantiles(mapping, [0.50, 0.90, 0.95, 0.99]);
                Some(Summary {
                    count: s.count,
                    min: s.min,
                    max: s.max,
                    mean: s.sum / s.count.max(1) as f64,
                    p50,
                    p90,
                    p95,
                    p99,
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

    fn mapping() -> Mapping {
        Mapping::new(DEFAULT_RELATIVE_ERROR)
    }

    fn of(values: impl IntoIterator<Item = f64>) -> Distribution {
        let mut d = Distribution::default();
        for v in values {
            d.add(&mapping(), v);
        }
        d
    }

    #[test]
    fn summary_of_an_empty_distribution_is_none() {
        assert!(Distribution::default().summary(&mapping()).is_none());
        assert_eq!(Distribution::default().heap_bytes(), 0);
    }

    #[test]
    fn percentiles_are_within_the_relative_error() {
        let d = of((1..=1000).map(f64::from));
        let s = d.summary(&mapping()).expect("values were added");
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
    fn a_few_values_are_exact() {
        let s = of([3.0, 1.0, 2.0])
            .summary(&mapping())
            .expect("values were added");
        assert_eq!((s.count, s.min, s.max, s.mean), (3, 1.0, 3.0, 2.0));
        assert_eq!((s.p50, s.p99), (2.0, 2.0));
    }

    #[test]
    fn percentiles_stay_within_min_and_max() {
        let s = of(std::iter::repeat_n(7.3, 100))
            .summary(&mapping())
            .expect("values were added");
        assert_eq!((s.p50, s.p90, s.p95, s.p99), (7.3, 7.3, 7.3, 7.3));
    }

    #[test]
    fn negative_values_and_zeros_rank_below_positive_ones() {
        let values: Vec<f64> = (0..100).map(|i| f64::from(i - 50)).collect();
        let s = of(values.iter().copied())
            .summary(&mapping())
            .expect("values were added");
        assert_eq!((s.min, s.max, s.count), (-50.0, 49.0, 100));
        // Ranks 49, 89, 94, 98 of -50..=49: -1, 39, 44, 48.
        assert!((s.p50 + 1.0).abs() <= 0.011, "{}", s.p50);
        for (got, exact) in [(s.p90, 39.0), (s.p95, 44.0), (s.p99, 48.0)] {
            assert!((got - exact).abs() <= exact * 0.011, "{got} vs {exact}");
        }
        let zeros = of(std::iter::repeat_n(0.0, 40).chain([5.0]))
            .summary(&mapping())
            .expect("values were added");
        assert_eq!((zeros.p50, zeros.p95), (0.0, 0.0));
    }

    #[test]
    fn merging_equals_adding_the_union() {
        let values: Vec<f64> = (1..=500).map(|i| f64::from(i) * 1.7).collect();
        let whole = of(values.iter().copied());
        // Pieces of every size: exact into exact, exact into sketch, sketch into exact,
        // sketch into sketch.
        let mut merged = Distribution::default();
        for piece in values.chunks(7) {
            merged.merge(&of(piece.iter().copied()));
        }
        let mut big_first = of(values[..300].iter().copied());
        big_first.merge(&of(values[300..310].iter().copied()));
        big_first.merge(&of(values[310..].iter().copied()));
        let mut small_first = of(values[..5].iter().copied());
        small_first.merge(&of(values[5..].iter().copied()));
        let want = whole.summary(&mapping());
        for d in [merged, big_first, small_first] {
            let got = d.summary(&mapping());
            let (Some(g), Some(w)) = (got, want) else {
                panic!("values were added");
            };
            assert_eq!(
                (g.count, g.min, g.max, g.p50, g.p90, g.p95, g.p99),
                (w.count, w.min, w.max, w.p50, w.p90, w.p95, w.p99)
            );
            assert!((g.mean - w.mean).abs() <= 1e-9 * w.mean);
        }
    }

    #[test]
    fn bins_beyond_the_limit_fold_into_the_lowest_kept() {
        let mut bins = Bins::default();
        bins.add(5);
        bins.add(5 + MAX_BINS - 1);
        assert_eq!(bins.counts.len(), MAX_BINS as usize);
        bins.add(5 + MAX_BINS + 9);
        assert_eq!(bins.counts.len(), MAX_BINS as usize);
        assert_eq!(bins.offset, 5 + 10);
        assert_eq!(bins.counts[0], 1, "the lowest bin took the folded one");
        bins.add(0);
        assert_eq!((bins.offset, bins.counts[0]), (15, 2));
        // A jump past every bin kept folds them all into the new lowest.
        bins.add(10_000);
        assert_eq!(bins.offset, 10_000 - MAX_BINS + 1);
        assert_eq!(bins.counts.iter().sum::<u64>(), 5);
        assert_eq!(bins.counts[0], 4);

        let mut low = Bins::default();
        low.add(-3);
        low.add(2);
        let mut high = Bins::default();
        high.add(MAX_BINS + 100);
        high.merge(&low);
        assert_eq!(high.counts.iter().sum::<u64>(), 3);
        assert_eq!(
            high.counts[0], 2,
            "keys below the kept span fold into the lowest"
        );
        low.merge(&Bins::default());
        assert_eq!(low.counts.iter().sum::<u64>(), 2);
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
