//! The encrypted scorer: the smooth forest on CKKS ciphertexts, one slot per day.
//!
//! # Layout
//!
//! The input is 24 **hour planes**: ciphertext `h` holds, in slot `i`, the energy (kWh, capped
//! as the model's lane requires) of hour `h` of day `i`. Consecutive slots are consecutive days
//! of one home, so the previous week of slot `i` is slots `i−7 .. i`: the first seven slots of
//! a home's block are history and their outputs are meaningless. Several homes share a
//! ciphertext by taking separate blocks (a meter can encrypt its planes directly at its block's
//! offset, as the billing layout does, so that the utility only adds ciphertexts). One
//! evaluation scores every slot at once: 8192 days at n = 16384, 16384 at n = 32768, for the
//! same cost as one.
//!
//! # Circuit (plaintext twin: [`AnomalyModel::score_smooth`])
//!
//! 1. Linear forms, no level: the sums of the hours a feature uses are additions of planes;
//!    a sum `B` over the previous week is `S − B` with `S = B + rot(B, −1)`,
//!    `S += rot(S, −2)`, `S += rot(S, −4)` (three rotations, right by 1, 2 and 4 slots).
//! 2. Margins, one level (two for features with squares: the squares of ±1 combinations of
//!    planes cost one product each, cached across features): for every comparison
//!    `(feature, threshold)` the forest uses (shared by all trees),
//!    `z = (num − t·den) / normalizer` as plaintext-scalar multiples of the sums.
//! 3. Steps, [`StepApprox::depth`](crate::step::StepApprox::depth) levels (12 for the
//!    default three degree-15 stages): `s = (1 + P(z)) / 2` with `P` the composite
//!    polynomial, BSGS at optimal depth per stage, and `1 − s` beside it (free).
//! 4. Trees, one level per **two** tree levels: `reach(root) = 1`; below a node at even
//!    depth, `right = reach · s` and `left = reach − right` (one product); below a node at odd
//!    depth, `right = reach(parent) · (edge · s)` and `left = reach − right` (two products,
//!    the pair product one level below the steps), so a node at depth `d ≥ 2` has lost
//!    `⌈d/2⌉` levels. The path-length sum gains `reach` at every split and `c(n) · reach` at
//!    every leaf (one more level), and each feature's isolation credit gains
//!    `(H + 1 − depth) · reach` at the leaves whose parent splits on it. The two reaches
//!    below the root, `s` and `1 − s`, are summed symbolically (adding their ciphertexts
//!    would cancel exactly, which SEAL refuses as a transparent result).
//!
//! For the committed model (5 features × 8 thresholds = 40 comparisons, 100 trees of height 8,
//! 5580 splits) that is 2 + 12 + 5 = 19 levels: `N32768_L19_SEC128`.
//!
//! The output is the sum over trees of the path lengths (and, for explanations, the
//! per-feature isolation credits), which the key authority decrypts and maps to the score
//! ([`AnomalyModel::score_from_path_sum`]). Total depth: [`AnomalyModel::circuit_depth`];
//! inputs with more levels are first switched down to exactly that, so every operation runs
//! on the smallest modulus that still suffices.

use std::collections::BTreeMap;

use seer_ckks::{Ciphertext, Evaluator, Level};

use crate::error::AnomalyError;
use crate::features::{FeatureDef, HOURS};
use crate::forest::{Node, average_path_length};
use crate::model::{AnomalyModel, isolation_weight};

/// Rotation steps the scorer needs Galois keys for.
pub const ROTATION_STEPS: [i64; 3] = [-1, -2, -4];

/// The 24 plaintext hour planes of a sequence of days: `planes[h][i]` is hour `h` of day `i`.
pub fn hour_planes(days: &[[f64; HOURS]]) -> Vec<Vec<f64>> {
    (0..HOURS)
        .map(|h| days.iter().map(|d| d[h]).collect())
        .collect()
}

/// A per-slot output that is either encrypted or a public constant (the one type of
/// [`seer_core::registered`]).
pub use seer_core::registered::EncryptedValue;

/// What the circuit outputs, per slot.
#[derive(Debug)]
pub struct EncryptedScores {
    /// Σ over trees of the smooth path length.
    pub path_sum: Ciphertext,
    /// Per feature, its isolation credit (see
    /// [`SmoothScore::isolation_credit`](crate::model::SmoothScore::isolation_credit)), for the
    /// explanation of flagged days.
    pub isolation_credit: Vec<EncryptedValue>,
}

/// A node's reach: a constant (the root), a step value or its complement (the root's
/// children), or a general ciphertext.
enum Value {
    Const(f64),
    /// `s` (`complement == false`) or `1 − s` for the step of comparison `key`.
    Step {
        key: (u16, u16),
        complement: bool,
    },
    Ct(Ciphertext),
}

/// An accumulator: ciphertexts, multiples of step ciphertexts and a constant, kept apart.
///
/// Step multiples are summed symbolically because the reaches of the root's two children are
/// `s` and `1 − s`: adding both ciphertexts would cancel exactly, which SEAL refuses (a
/// transparent ciphertext), and which would waste work anyway.
struct Acc {
    ct: Option<Ciphertext>,
    steps: BTreeMap<(u16, u16), f64>,
    constant: f64,
}

impl Acc {
    fn new() -> Self {
        Self {
            ct: None,
            steps: BTreeMap::new(),
            constant: 0.0,
        }
    }

    /// `acc += weight · v`.
    fn add(&mut self, ev: &Evaluator, v: &Value, weight: f64) -> Result<(), AnomalyError> {
        match v {
            Value::Const(c) => self.constant += weight * c,
            Value::Step { key, complement } => {
                let sign = if *complement {
                    self.constant += weight;
                    -1.0
                } else {
                    1.0
                };
                *self.steps.entry(*key).or_insert(0.0) += sign * weight;
            }
            Value::Ct(ct) => {
                let term = if weight == 1.0 {
                    None
                } else {
                    Some(ev.multiply_scalar(ct, weight)?)
                };
                let term = term.as_ref().unwrap_or(ct);
                match &mut self.ct {
                    Some(acc) => ev.add_assign(acc, term)?,
                    None => self.ct = Some(term.try_clone()?),
                }
            }
        }
        Ok(())
    }

    fn finish(
        self,
        ev: &Evaluator,
        steps: &BTreeMap<(u16, u16), Ciphertext>,
    ) -> Result<EncryptedValue, AnomalyError> {
        let mut terms: Vec<Ciphertext> = self.ct.into_iter().collect();
        for (key, coeff) in self.steps {
            if coeff.abs() < 1e-12 {
                continue;
            }
            let s = steps.get(&key).ok_or_else(|| missing(key))?;
            terms.push(if coeff == 1.0 {
                s.try_clone()?
            } else if coeff == -1.0 {
                ev.negate(s)?
            } else {
                ev.multiply_scalar(s, coeff)?
            });
        }
        if terms.is_empty() {
            return Ok(EncryptedValue::Public(self.constant));
        }
        let sum = ev.add_many(&terms)?;
        Ok(EncryptedValue::Encrypted(if self.constant != 0.0 {
            ev.add_scalar(&sum, self.constant)?
        } else {
            sum
        }))
    }
}

fn missing(key: (u16, u16)) -> AnomalyError {
    AnomalyError::InvalidModel {
        reason: format!("comparison {key:?} was not evaluated"),
    }
}

/// Sums of groups of hour planes, of the day and of the previous seven days, computed once.
#[derive(Default)]
struct SumCache {
    day: BTreeMap<Vec<usize>, Ciphertext>,
    week: BTreeMap<Vec<usize>, Ciphertext>,
    squares: BTreeMap<Vec<i8>, Ciphertext>,
}

impl SumCache {
    /// `(Σ form[h]·x_h)²` for a form with coefficients in {−1, 0, 1}: additions, one product.
    fn square(
        &mut self,
        ev: &Evaluator,
        planes: &[Ciphertext],
        form: &[f64; HOURS],
    ) -> Result<&Ciphertext, AnomalyError> {
        let key: Vec<i8> = form.iter().map(|w| *w as i8).collect();
        if !self.squares.contains_key(&key) {
            let plus: Vec<usize> = (0..HOURS).filter(|h| key[*h] == 1).collect();
            let minus: Vec<usize> = (0..HOURS).filter(|h| key[*h] == -1).collect();
            let inner = match (plus.is_empty(), minus.is_empty()) {
                (false, true) => self.get(ev, planes, &plus, false)?.try_clone()?,
                (false, false) => {
                    let p = self.get(ev, planes, &plus, false)?.try_clone()?;
                    ev.sub(&p, self.get(ev, planes, &minus, false)?)?
                }
                (true, false) => ev.negate(self.get(ev, planes, &minus, false)?)?,
                (true, true) => {
                    return Err(AnomalyError::InvalidModel {
                        reason: "a square of the zero form".into(),
                    });
                }
            };
            self.squares
                .insert(key.clone(), ev.multiply(&inner, &inner)?);
        }
        self.squares.get(&key).ok_or_else(|| missing((0, 0)))
    }

    /// `Σ_{h ∈ hours} x_h` of the slot's day (`week == false`) or of the seven slots before it.
    fn get(
        &mut self,
        ev: &Evaluator,
        planes: &[Ciphertext],
        hours: &[usize],
        week: bool,
    ) -> Result<&Ciphertext, AnomalyError> {
        if !self.day.contains_key(hours) {
            let parts: Vec<Ciphertext> = hours
                .iter()
                .map(|h| planes[*h].try_clone())
                .collect::<Result<_, _>>()?;
            self.day.insert(hours.to_vec(), ev.add_many(&parts)?);
        }
        if !week {
            return self.day.get(hours).ok_or_else(|| missing((0, 0)));
        }
        if !self.week.contains_key(hours) {
            let day = self.day.get(hours).ok_or_else(|| missing((0, 0)))?;
            // Slots i, i−1 (1 rotation), i−3.. (2), i−7.. (4): the eight days ending at i.
            let mut s = ev.add(day, &ev.rotate(day, -1)?)?;
            s = ev.add(&s, &ev.rotate(&s, -2)?)?;
            s = ev.add(&s, &ev.rotate(&s, -4)?)?;
            self.week.insert(hours.to_vec(), ev.sub(&s, day)?);
        }
        self.week.get(hours).ok_or_else(|| missing((0, 0)))
    }
}

/// The step ciphertexts `s` and their complements `1 − s`, per comparison.
struct Factors<'a> {
    steps: &'a BTreeMap<(u16, u16), Ciphertext>,
    complements: &'a BTreeMap<(u16, u16), Ciphertext>,
}

impl Factors<'_> {
    fn step(&self, key: (u16, u16)) -> Result<&Ciphertext, AnomalyError> {
        self.steps.get(&key).ok_or_else(|| missing(key))
    }

    fn complement(&self, key: (u16, u16)) -> Result<&Ciphertext, AnomalyError> {
        self.complements.get(&key).ok_or_else(|| missing(key))
    }

    /// A reach as a ciphertext (a constant other than 1 never occurs: only the root's is).
    fn materialize(&self, ev: &Evaluator, v: &Value) -> Result<Ciphertext, AnomalyError> {
        let _ = ev;
        match v {
            Value::Ct(ct) => Ok(ct.try_clone()?),
            Value::Step { key, complement } => Ok(if *complement {
                self.complement(*key)?
            } else {
                self.step(*key)?
            }
            .try_clone()?),
            Value::Const(_) => Err(AnomalyError::InvalidModel {
                reason: "a constant reach below the root".into(),
            }),
        }
    }
}

/// The accumulators a tree walk adds to.
struct Sums<'a> {
    path: &'a mut Acc,
    per_feature: &'a mut [Acc],
}

/// The encrypted scorer of one model. Holds only public material.
pub struct EncryptedScorer<'a> {
    model: &'a AnomalyModel,
    evaluator: &'a Evaluator,
}

impl std::fmt::Debug for EncryptedScorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedScorer")
            .field("depth", &self.model.circuit_depth())
            .finish_non_exhaustive()
    }
}

impl<'a> EncryptedScorer<'a> {
    /// A scorer for `model` with an evaluator holding relinearization keys and the Galois keys
    /// for [`ROTATION_STEPS`]. Fails if the parameter set has fewer levels than the circuit.
    pub fn try_new(
        model: &'a AnomalyModel,
        evaluator: &'a Evaluator,
    ) -> Result<Self, AnomalyError> {
        model.validate()?;
        let needed = model.circuit_depth();
        let available = evaluator.context().top_level().0;
        if needed > available {
            return Err(AnomalyError::DepthExceeded { needed, available });
        }
        Ok(Self { model, evaluator })
    }

    /// Scores every slot of the 24 hour planes.
    pub fn score(&self, planes: &[Ciphertext]) -> Result<EncryptedScores, AnomalyError> {
        let ev = self.evaluator;
        let model = self.model;
        let _span = tracing::info_span!(
            "anomaly_score",
            trees = model.forest.trees.len(),
            splits = model.forest.splits(),
            depth = model.circuit_depth()
        )
        .entered();
        if planes.len() != HOURS {
            return Err(AnomalyError::InvalidInput {
                reason: format!("{} hour planes, expected {HOURS}", planes.len()),
            });
        }
        let needed = model.circuit_depth();
        let level = planes
            .iter()
            .map(Ciphertext::level)
            .min()
            .unwrap_or(Level(0));
        if level.0 < needed {
            return Err(AnomalyError::DepthExceeded {
                needed,
                available: level.0,
            });
        }
        let start = Level(needed);
        let planes: Vec<Ciphertext> = planes
            .iter()
            .map(|p| ev.mod_switch_to(p, start))
            .collect::<Result<_, _>>()?;

        // 1. Sums of hour groups, of the day and of the previous week (no level), on demand.
        let mut cache = SumCache::default();

        // 2–3. Margins and steps for every comparison the forest uses.
        let mut used: BTreeMap<(u16, u16), ()> = BTreeMap::new();
        for tree in &model.forest.trees {
            for node in &tree.nodes {
                if let Node::Split(f, k, _, _) = node {
                    used.insert((*f, *k), ());
                }
            }
        }
        let stages = model.step.circuit_stages()?;
        let mut steps: BTreeMap<(u16, u16), Ciphertext> = BTreeMap::new();
        let mut complements: BTreeMap<(u16, u16), Ciphertext> = BTreeMap::new();
        for &(f, k) in used.keys() {
            let feature = &model.features.features[f as usize];
            let t = model.thresholds[f as usize][k as usize];
            let norm = model.normalizers[f as usize][k as usize];
            let margin = self.margin(feature, (1.0 / norm, -t / norm), &planes, &mut cache)?;
            let mut x = margin;
            for p in &stages {
                x = ev.evaluate_polynomial(&x, p)?;
            }
            let step = ev.add_scalar(&x, 0.5)?;
            complements.insert((f, k), ev.add_scalar(&ev.negate(&step)?, 1.0)?);
            steps.insert((f, k), step);
        }
        let factors = Factors {
            steps: &steps,
            complements: &complements,
        };

        tracing::debug!(comparisons = steps.len(), "steps evaluated");

        // 4. Trees.
        let mut path = Acc::new();
        let mut per_feature: Vec<Acc> = (0..model.features.len()).map(|_| Acc::new()).collect();
        for tree in &model.forest.trees {
            let mut sums = Sums {
                path: &mut path,
                per_feature: &mut per_feature,
            };
            self.walk(
                &tree.nodes,
                (0, 0, None),
                &Value::Const(1.0),
                None,
                &factors,
                &mut sums,
            )?;
        }
        let path_sum = match path.finish(ev, &steps)? {
            EncryptedValue::Encrypted(ct) => ct,
            EncryptedValue::Public(_) => {
                return Err(AnomalyError::InvalidModel {
                    reason: "the path length does not depend on the input".into(),
                });
            }
        };
        Ok(EncryptedScores {
            path_sum,
            isolation_credit: per_feature
                .into_iter()
                .map(|a| a.finish(ev, &steps))
                .collect::<Result<_, _>>()?,
        })
    }

    /// `a·num + b·den` (with `num` including the feature's squares): hours grouped by
    /// coefficient, each group's sum (of the day, or of the previous week) computed once
    /// (cached) and scaled once; one level, two with squares.
    fn margin(
        &self,
        feature: &FeatureDef,
        (a, b): (f64, f64),
        planes: &[Ciphertext],
        cache: &mut SumCache,
    ) -> Result<Ciphertext, AnomalyError> {
        let ev = self.evaluator;
        let (num, den) = (&feature.numerator, &feature.denominator);
        let mut terms = Vec::new();
        for week in [false, true] {
            // Coefficient of each hour, grouped (exact f64 keys via bits).
            let mut groups: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for h in 0..HOURS {
                let c = if week {
                    a * num.prev_week[h] + b * den.prev_week[h]
                } else {
                    a * num.hours[h] + b * den.hours[h]
                };
                if c != 0.0 {
                    groups.entry(c.to_bits()).or_default().push(h);
                }
            }
            for (bits, hours) in groups {
                let sum = cache.get(ev, planes, &hours, week)?;
                terms.push(ev.multiply_scalar(sum, f64::from_bits(bits))?);
            }
        }
        // Squares, grouped by weight: Σ (±x_h ± …)², one product each, one scalar per group.
        let mut by_weight: BTreeMap<u64, Vec<Ciphertext>> = BTreeMap::new();
        for sq in &feature.squares {
            let square = cache.square(ev, planes, &sq.form)?;
            by_weight
                .entry((a * sq.weight).to_bits())
                .or_default()
                .push(square.try_clone()?);
        }
        for (bits, squares) in by_weight {
            terms.push(ev.multiply_scalar(&ev.add_many(&squares)?, f64::from_bits(bits))?);
        }
        let mut out = ev.add_many(&terms)?;
        let constant = a * num.constant + b * den.constant;
        if constant != 0.0 {
            out = ev.add_scalar(&out, constant)?;
        }
        Ok(out)
    }

    /// Adds node `i`'s subtree to the sums. `reach` is the node's reach; `up` is, for a node
    /// at odd depth, its parent's reach and the factor of the edge into it.
    ///
    /// Children of a node at even depth: `right = reach · s`, `left = reach − right`. Children
    /// of a node at odd depth: `right = reach(parent) · (edge · s)`, `left = reach − right`:
    /// the pair product `edge · s` sits one level below the steps, so reaches lose one level
    /// per **two** tree levels (`⌈d/2⌉` at depth `d ≥ 2`) instead of one per level.
    fn walk(
        &self,
        nodes: &[Node],
        (i, depth, parent): (usize, u32, Option<u16>),
        reach: &Value,
        up: Option<(&Value, &Ciphertext)>,
        factors: &Factors<'_>,
        sums: &mut Sums<'_>,
    ) -> Result<(), AnomalyError> {
        let ev = self.evaluator;
        match nodes[i] {
            Node::Leaf(n) => {
                let c = average_path_length(n as usize);
                if c > 0.0 {
                    sums.path.add(ev, reach, c)?;
                }
                if let Some(f) = parent {
                    let w = isolation_weight(self.model.forest.height_limit, depth);
                    sums.per_feature[f as usize].add(ev, reach, w)?;
                }
            }
            Node::Split(f, k, l, r) => {
                sums.path.add(ev, reach, 1.0)?;
                let key = (f, k);
                let s = factors.step(key)?;
                let cs = factors.complement(key)?;
                let (right, left) = match (reach, up) {
                    (Value::Const(c), None) if *c == 1.0 => (
                        Value::Step {
                            key,
                            complement: false,
                        },
                        Value::Step {
                            key,
                            complement: true,
                        },
                    ),
                    (reach, None) => {
                        let reach = factors.materialize(ev, reach)?;
                        let right = ev.multiply(&reach, s)?;
                        let left = ev.sub(&reach, &right)?;
                        (Value::Ct(right), Value::Ct(left))
                    }
                    (reach, Some((parent, edge))) => {
                        let pair = ev.multiply(edge, s)?;
                        let right = match parent {
                            Value::Const(c) if *c == 1.0 => pair,
                            parent => ev.multiply(&factors.materialize(ev, parent)?, &pair)?,
                        };
                        let left = ev.sub(&factors.materialize(ev, reach)?, &right)?;
                        (Value::Ct(right), Value::Ct(left))
                    }
                };
                // Children of an even-depth node are at odd depth and need (reach, edge).
                let (up_r, up_l) = if up.is_none() {
                    (Some((reach, s)), Some((reach, cs)))
                } else {
                    (None, None)
                };
                let below = |child: u32| (child as usize, depth + 1, Some(f));
                self.walk(nodes, below(r), &right, up_r, factors, sums)?;
                self.walk(nodes, below(l), &left, up_l, factors, sums)?;
            }
        }
        Ok(())
    }
}
