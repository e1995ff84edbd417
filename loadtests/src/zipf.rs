//! Zipf-skewed choice of products: a few hot products take most of the orders, so
//! the row locks of order placement contend as they do in a real shop.

use rand::Rng;

/// Draws ranks `0..n` with P(rank k) ∝ 1 / (k + 1)^exponent.
#[derive(Clone, Debug)]
pub struct Zipf {
    /// Cumulative probabilities, the last one exactly 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// A distribution over `n` ranks (`n` ≥ 1); exponent 0 is uniform.
    pub fn new(n: usize, exponent: f64) -> Self {
        assert!(n > 0, "a Zipf distribution needs at least one rank");
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let mut cdf: Vec<f64> = weights
            .iter()
            .map(|w| {
                sum += w / total;
                sum
            })
            .collect();
        *cdf.last_mut().expect("n > 0") = 1.0;
        Self { cdf }
    }

    /// How many ranks there are.
    pub fn ranks(&self) -> usize {
        self.cdf.len()
    }

    /// One rank.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf
            .partition_point(|p| *p <= u)
            .min(self.cdf.len() - 1)
    }

    /// `count` distinct ranks (fewer if there are fewer ranks), in the order drawn.
    pub fn sample_distinct(&self, rng: &mut impl Rng, count: usize) -> Vec<usize> {
        let count = count.min(self.ranks());
        let mut chosen = Vec::with_capacity(count);
        // Rejection is cheap unless the skew is extreme; after a bounded number of
        // tries the next unchosen rank is taken instead.
        let mut tries = 0;
        while chosen.len() < count {
            let rank = self.sample(rng);
            if !chosen.contains(&rank) {
                chosen.push(rank);
            } else if tries > 64 {
                let free = (0..self.ranks())
                    .find(|r| !chosen.contains(r))
                    .expect("count <= len");
                chosen.push(free);
            }
            tries += 1;
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn the_first_rank_is_chosen_about_as_often_as_the_exponent_says() {
        let zipf = Zipf::new(100, 1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 100];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // H(100) ≈ 5.187: rank 0 gets ≈ 19.3 %, rank 1 ≈ 9.6 %.
        assert!((18_000..20_500).contains(&counts[0]), "{}", counts[0]);
        assert!((8_800..10_500).contains(&counts[1]), "{}", counts[1]);
        assert!(counts[99] > 0);
    }

    #[test]
    fn exponent_zero_is_uniform() {
        let zipf = Zipf::new(4, 0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn distinct_ranks_are_distinct_even_under_extreme_skew() {
        let zipf = Zipf::new(3, 30.0);
        let mut rng = StdRng::seed_from_u64(3);
        let mut ranks = zipf.sample_distinct(&mut rng, 5);
        assert_eq!(ranks.len(), 3);
        ranks.sort_unstable();
        assert_eq!(ranks, vec![0, 1, 2]);
    }
}
