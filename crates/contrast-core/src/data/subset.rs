//! A view of some samples of another data set (e.g. a class-balanced subset for small runs).

use super::augment::Source;
use super::dataset::{Dataset, ImageRef};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Samples `indices` of `inner`, in that order.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// Every index must be `< inner.len()`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        let n = inner.len();
        if let Some(bad) = indices.iter().find(|&&i| i >= n) {
            anyhow::bail!("subset index {bad} is out of range for a data set of {n} samples");
        }
        Ok(Self { inner, indices })
    }

    /// `n` samples spread evenly over the classes (each class's samples shuffled with `seed`,
    /// then taken round-robin across classes in class order), so the subset is the same for a
    /// seed and as balanced as `n` allows. The subset lists its samples class-interleaved.
    pub fn balanced(inner: Arc<dyn Dataset>, n: usize, seed: u64) -> Result<Self> {
        ensure!(n > 0, "a subset needs at least one sample");
        ensure!(
            n <= inner.len(),
            "asked for {n} samples from a data set of {}",
            inner.len()
        );
        let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for i in 0..inner.len() {
            by_class.entry(inner.label(i)?).or_default().push(i);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for v in by_class.values_mut() {
            v.shuffle(&mut rng);
        }
        let lists: Vec<Vec<usize>> = by_class.into_values().collect();
        let mut indices = Vec::with_capacity(n);
        let mut round = 0;
        while indices.len() < n {
            for l in &lists {
                if indices.len() < n && round < l.len() {
                    indices.push(l[round]);
                }
            }
            round += 1;
        }
        Self::new(inner, indices)
    }

    /// The indices into the underlying data set.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<(ImageRef<'_>, i64)> {
        ensure!(
            index < self.indices.len(),
            "index {index} out of range for a subset of {}",
            self.indices.len()
        );
        self.inner.get(self.indices[index])
    }
    fn label(&self, index: usize) -> Result<i64> {
        ensure!(
            index < self.indices.len(),
            "index {index} out of range for a subset of {}",
            self.indices.len()
        );
        self.inner.label(self.indices[index])
    }
    fn get_scaled(
        &self,
        index: usize,
        denom: &mut dyn FnMut(usize, usize) -> usize,
    ) -> Result<(ImageRef<'_>, i64, Source)> {
        ensure!(
            index < self.indices.len(),
            "index {index} out of range for a subset of {}",
            self.indices.len()
        );
        self.inner.get_scaled(self.indices[index], denom)
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn skipped(&self) -> Option<super::dataset::Skipped> {
        self.inner.skipped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::InMemoryDataset;

    #[test]
    fn balanced_subset_is_balanced_reproducible_and_valid() {
        // 30 one-pixel images, labels 0,0,0,…,1,…,2 (10 each), pixel value = index
        let pixels: Vec<u8> = (0..30u8).flat_map(|i| [i, i, i]).collect();
        let labels: Vec<i64> = (0..30).map(|i| i / 10).collect();
        let ds: Arc<dyn Dataset> = Arc::new(
            InMemoryDataset::from_nhwc(
                pixels,
                1,
                1,
                3,
                labels,
                vec!["a".into(), "b".into(), "c".into()],
            )
            .unwrap(),
        );
        let s = Subset::balanced(Arc::clone(&ds), 7, 1).unwrap();
        assert_eq!(s.len(), 7);
        let mut counts = [0; 3];
        for i in 0..s.len() {
            let (img, y) = s.get(i).unwrap();
            counts[y as usize] += 1;
            assert_eq!(
                img.at(0, 0, 0) as i64 / 10,
                y,
                "label and image stay together"
            );
        }
        assert_eq!(counts, [3, 2, 2]);
        let again = Subset::balanced(Arc::clone(&ds), 7, 1).unwrap();
        assert_eq!(s.indices(), again.indices());
        assert_ne!(
            s.indices(),
            Subset::balanced(Arc::clone(&ds), 7, 2).unwrap().indices()
        );
        assert!(Subset::new(Arc::clone(&ds), vec![30]).is_err());
        assert!(Subset::balanced(ds, 31, 0).is_err());
        assert_eq!(s.classes().len(), 3);
    }
}
