//! Isolation Forest (Liu, Ting and Zhou 2008) on a shared grid of split thresholds.
//!
//! Training follows the original algorithm — each tree is grown on a random subsample of
//! `ψ` records (without replacement), to the height limit `⌈log2 ψ⌉`; a node picks a random
//! feature and a random split between the node's least and greatest value — with one change
//! that makes the encrypted evaluation cheap: split thresholds are drawn from a fixed per-feature
//! **grid** (uniform in value between two training quantiles) instead of from the continuum.
//! A node picks uniformly among the grid thresholds that separate its records (which, for a
//! uniform grid, is a uniform split between its least and greatest value rounded to the grid);
//! features with no separating threshold are skipped, and a node with none at all is a leaf.
//! All trees then share `features × grid` comparisons, so the encrypted scorer evaluates each
//! comparison's step polynomial once for all trees, not once per node.
//!
//! The path length of a record in a tree is the number of edges from the root to its leaf plus
//! `c(n)` for a leaf holding `n` training records (the expected path length of an unbuilt
//! subtree), with `c(n) = 2H(n−1) − 2(n−1)/n`, `H(i) = ln i + γ`, `c(2) = 1`, `c(n ≤ 1) = 0`
//! (as in the paper and scikit-learn). The anomaly score is `2^(−E[h]/c(ψ))`.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::AnomalyError;

/// The Euler–Mascheroni constant.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of `n`
/// records, used to normalize path lengths.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let m = (n - 1) as f64;
            2.0 * (m.ln() + EULER_GAMMA) - 2.0 * m / n as f64
        }
    }
}

/// The anomaly score `2^(−mean_path / c(ψ))` of a mean path length.
pub fn score_from_path(mean_path: f64, subsample: usize) -> f64 {
    2f64.powf(-mean_path / average_path_length(subsample))
}

/// The mean path length whose score is `score` (the inverse of [`score_from_path`]).
pub fn path_from_score(score: f64, subsample: usize) -> f64 {
    -score.log2() * average_path_length(subsample)
}

/// A node of an isolation tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// `[feature, threshold index, left child, right child]`: records whose split margin is
    /// positive (feature above the threshold) go right.
    #[serde(rename = "s")]
    Split(u16, u16, u32, u32),
    /// A leaf holding this many training records.
    #[serde(rename = "l")]
    Leaf(u32),
}

/// One isolation tree; node 0 is the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// The nodes, parents before children.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The depth of the deepest node (the root has depth 0).
    pub fn height(&self) -> u32 {
        fn go(t: &Tree, i: usize, d: u32) -> u32 {
            match t.nodes.get(i) {
                Some(Node::Split(_, _, l, r)) => {
                    go(t, *l as usize, d + 1).max(go(t, *r as usize, d + 1))
                }
                _ => d,
            }
        }
        go(self, 0, 0)
    }

    /// The number of split nodes.
    pub fn splits(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n, Node::Split(..)))
            .count()
    }

    /// The path length of a record whose side at each comparison is given by `right(f, k)`.
    pub fn path_length(&self, right: impl Fn(usize, usize) -> bool) -> f64 {
        let mut i = 0usize;
        let mut depth = 0.0;
        loop {
            match self.nodes[i] {
                Node::Split(f, k, l, r) => {
                    i = if right(f as usize, k as usize) { r } else { l } as usize;
                    depth += 1.0;
                }
                Node::Leaf(n) => return depth + average_path_length(n as usize),
            }
        }
    }

    fn validate(&self, features: usize, grid: usize) -> Result<(), AnomalyError> {
        let bad = |reason: String| Err(AnomalyError::InvalidModel { reason });
        if self.nodes.is_empty() {
            return bad("empty tree".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Node::Split(f, k, l, r) = *n {
                let (l, r) = (l as usize, r as usize);
                if f as usize >= features || k as usize >= grid {
                    return bad(format!("node {i} splits on feature {f} threshold {k}"));
                }
                // Children after their parent: no cycles, every walk terminates.
                if l <= i || r <= i || l >= self.nodes.len() || r >= self.nodes.len() {
                    return bad(format!("node {i} has children {l} and {r}"));
                }
            }
        }
        Ok(())
    }
}

/// Which side of each grid comparison every training record lies on.
#[derive(Clone, Debug)]
pub struct SideTable {
    features: usize,
    grid: usize,
    right: Vec<bool>,
}

impl SideTable {
    /// `right(record, feature, k)` for `records` records, from a function.
    pub fn new(
        records: usize,
        features: usize,
        grid: usize,
        right: impl Fn(usize, usize, usize) -> bool,
    ) -> Self {
        let mut table = Vec::with_capacity(records * features * grid);
        for i in 0..records {
            for f in 0..features {
                for k in 0..grid {
                    table.push(right(i, f, k));
                }
            }
        }
        Self {
            features,
            grid,
            right: table,
        }
    }

    fn records(&self) -> usize {
        self.right.len() / (self.features * self.grid).max(1)
    }

    fn get(&self, i: usize, f: usize, k: usize) -> bool {
        self.right[(i * self.features + f) * self.grid + k]
    }
}

/// Training options of the forest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForestOptions {
    /// Number of trees.
    pub trees: usize,
    /// Records per tree (ψ); the height limit is `⌈log2 ψ⌉`.
    pub subsample: usize,
    /// Seed of the training RNG.
    pub seed: u64,
}

impl Default for ForestOptions {
    fn default() -> Self {
        Self {
            trees: 100,
            subsample: 256,
            seed: 0x5EE8_1F00,
        }
    }
}

/// A trained Isolation Forest over grid comparisons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    /// ψ: the records each tree was grown on (after capping at the training set's size).
    pub subsample: usize,
    /// The height limit `⌈log2 ψ⌉`.
    pub height_limit: u32,
    /// The trees.
    pub trees: Vec<Tree>,
}

impl Forest {
    /// Grows the forest on the records of `sides`.
    pub fn train(sides: &SideTable, options: &ForestOptions) -> Result<Self, AnomalyError> {
        let n = sides.records();
        if n < 2 || options.trees == 0 || options.subsample < 2 {
            return Err(AnomalyError::InvalidTraining {
                reason: format!(
                    "{n} records, {} trees, subsample {}: need at least 2 records, 1 tree and a \
                     subsample of 2",
                    options.trees, options.subsample
                ),
            });
        }
        if sides.features == 0 || sides.grid == 0 || sides.features > usize::from(u16::MAX) {
            return Err(AnomalyError::InvalidTraining {
                reason: "no features or no grid thresholds".into(),
            });
        }
        let psi = options.subsample.min(n);
        let height_limit = (psi as f64).log2().ceil() as u32;
        let mut rng = StdRng::seed_from_u64(options.seed);
        let trees = (0..options.trees)
            .map(|_| {
                let mut idx = rand::seq::index::sample(&mut rng, n, psi).into_vec();
                let mut nodes = Vec::new();
                grow(&mut nodes, &mut idx, 0, height_limit, sides, &mut rng);
                Tree { nodes }
            })
            .collect();
        Ok(Self {
            subsample: psi,
            height_limit,
            trees,
        })
    }

    /// Checks every tree against the number of features and grid thresholds.
    pub fn validate(&self, features: usize, grid: usize) -> Result<(), AnomalyError> {
        if self.trees.is_empty() || self.subsample < 2 {
            return Err(AnomalyError::InvalidModel {
                reason: "a forest needs trees and a subsample of at least 2".into(),
            });
        }
        for t in &self.trees {
            t.validate(features, grid)?;
        }
        Ok(())
    }

    /// The mean path length of a record whose comparisons are given by `right(f, k)`.
    pub fn mean_path_length(&self, right: impl Fn(usize, usize) -> bool) -> f64 {
        let total: f64 = self.trees.iter().map(|t| t.path_length(&right)).sum();
        total / self.trees.len() as f64
    }

    /// The height of the tallest tree.
    pub fn height(&self) -> u32 {
        self.trees.iter().map(Tree::height).max().unwrap_or(0)
    }

    /// The number of split nodes in all trees.
    pub fn splits(&self) -> usize {
        self.trees.iter().map(Tree::splits).sum()
    }
}

fn grow(
    nodes: &mut Vec<Node>,
    idx: &mut [usize],
    depth: u32,
    limit: u32,
    sides: &SideTable,
    rng: &mut StdRng,
) -> u32 {
    let me = nodes.len();
    nodes.push(Node::Leaf(idx.len() as u32));
    if depth >= limit || idx.len() <= 1 {
        return me as u32;
    }
    let mut features: Vec<usize> = (0..sides.features).collect();
    features.shuffle(rng);
    for f in features {
        let valid: Vec<usize> = (0..sides.grid)
            .filter(|&k| {
                let right = idx.iter().filter(|&&i| sides.get(i, f, k)).count();
                right > 0 && right < idx.len()
            })
            .collect();
        if valid.is_empty() {
            continue;
        }
        let k = valid[rng.random_range(0..valid.len())];
        // Partition: left (margin ≤ 0) first.
        let mut split = 0;
        for j in 0..idx.len() {
            if !sides.get(idx[j], f, k) {
                idx.swap(split, j);
                split += 1;
            }
        }
        let (left, right) = idx.split_at_mut(split);
        let l = grow(nodes, left, depth + 1, limit, sides, rng);
        let r = grow(nodes, right, depth + 1, limit, sides, rng);
        nodes[me] = Node::Split(f as u16, k as u16, l, r);
        return me as u32;
    }
    me as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_path_length_matches_the_formula() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // c(256) = 2(ln 255 + γ) − 2·255/256 ≈ 10.2448 (the paper's normalizer for ψ = 256).
        let c256 = 2.0 * (255f64.ln() + EULER_GAMMA) - 2.0 * 255.0 / 256.0;
        assert!((average_path_length(256) - c256).abs() < 1e-12);
        assert!((c256 - 10.244_770_920_455_8).abs() < 1e-9);
        // c(3) = 2(ln 2 + γ) − 4/3.
        assert!(
            (average_path_length(3) - (2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0)).abs() < 1e-15
        );
        // Score 0.5 at the average path length, and the inverse.
        assert!((score_from_path(c256, 256) - 0.5).abs() < 1e-15);
        assert!((path_from_score(score_from_path(7.3, 256), 256) - 7.3).abs() < 1e-12);
    }

    /// A one-feature data set on a fine grid: 200 inliers in [0, 1], 3 outliers near 5.
    fn toy() -> (Vec<f64>, Vec<f64>) {
        let mut values: Vec<f64> = (0..200).map(|i| (i as f64 * 0.618_034) % 1.0).collect();
        values.extend([5.0, 5.1, 4.9]);
        let grid: Vec<f64> = (0..64).map(|k| -0.1 + k as f64 * 0.1).collect();
        (values, grid)
    }

    #[test]
    fn outliers_score_above_inliers() {
        let (values, grid) = toy();
        let sides = SideTable::new(values.len(), 1, grid.len(), |i, _, k| values[i] > grid[k]);
        let forest = Forest::train(
            &sides,
            &ForestOptions {
                trees: 50,
                subsample: 64,
                seed: 7,
            },
        )
        .unwrap();
        assert_eq!(forest.height_limit, 6);
        assert!(forest.height() <= 6);
        forest.validate(1, grid.len()).unwrap();
        let score = |x: f64| {
            score_from_path(
                forest.mean_path_length(|_, k| x > grid[k]),
                forest.subsample,
            )
        };
        let outlier = score(5.0);
        for x in [0.1, 0.3, 0.5, 0.7, 0.9] {
            assert!(
                outlier > score(x) + 0.1,
                "outlier {outlier} vs {x}: {}",
                score(x)
            );
        }
        assert!(outlier > 0.6);
    }

    #[test]
    fn training_is_deterministic_per_seed() {
        let (values, grid) = toy();
        let sides = SideTable::new(values.len(), 1, grid.len(), |i, _, k| values[i] > grid[k]);
        let opts = ForestOptions {
            trees: 5,
            subsample: 32,
            seed: 1,
        };
        let a = Forest::train(&sides, &opts).unwrap();
        assert_eq!(a, Forest::train(&sides, &opts).unwrap());
        let b = Forest::train(&sides, &ForestOptions { seed: 2, ..opts }).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn validation_rejects_bad_trees() {
        let cyclic = Forest {
            subsample: 4,
            height_limit: 2,
            trees: vec![Tree {
                nodes: vec![Node::Split(0, 0, 0, 1), Node::Leaf(1)],
            }],
        };
        assert!(cyclic.validate(1, 1).is_err());
        let out_of_grid = Forest {
            subsample: 4,
            height_limit: 2,
            trees: vec![Tree {
                nodes: vec![Node::Split(0, 3, 1, 2), Node::Leaf(1), Node::Leaf(1)],
            }],
        };
        assert!(out_of_grid.validate(1, 3).is_err());
        assert!(out_of_grid.validate(1, 4).is_ok());
        assert!(
            Forest::train(
                &SideTable::new(1, 1, 1, |_, _, _| true),
                &ForestOptions::default()
            )
            .is_err()
        );
    }
}
