//! A map kept as a vector sorted by key: the Engine's per-group maps hold a
//! handful of entries (one per group a node is in) and are looked up several
//! times per message, where a `BTreeMap` walk costs more than the entry
//! itself. Iteration is in key order, as a `BTreeMap`'s, so everything that
//! walks the groups does so in the same order as before.

/// Sorted-vector map with the `BTreeMap` calls the Engine uses.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    pub fn new() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }

    /// Index of `key`, or where it would go.
    #[inline]
    fn find(&self, key: &K) -> Result<usize, usize> {
        // The common case: one entry (a node in one group).
        if let [(k, _)] = self.entries.as_slice() {
            return match k.cmp(key) {
                std::cmp::Ordering::Equal => Ok(0),
                std::cmp::Ordering::Less => Err(1),
                std::cmp::Ordering::Greater => Err(0),
            };
        }
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    #[inline]
    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;
    use std::collections::BTreeMap;

    /// The same calls on a `VecMap` and a `BTreeMap` give the same answers
    /// and the same key order.
    #[test]
    fn behaves_like_a_btreemap() {
        let mut v = VecMap::new();
        let mut b = BTreeMap::new();
        let mut x: u64 = 7;
        for step in 0..4000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 13;
            match step % 5 {
                0 | 1 => assert_eq!(v.insert(key, step), b.insert(key, step)),
                2 => assert_eq!(v.remove(&key), b.remove(&key)),
                3 => {
                    if let (Some(a), Some(c)) = (v.get_mut(&key), b.get_mut(&key)) {
                        *a += 1;
                        *c += 1;
                    }
                }
                _ => assert_eq!(v.contains_key(&key), b.contains_key(&key)),
            }
            assert_eq!(v.get(&key), b.get(&key));
            assert_eq!(v.is_empty(), b.is_empty());
            let vk: Vec<u64> = v.keys().copied().collect();
            let bk: Vec<u64> = b.keys().copied().collect();
            assert_eq!(vk, bk);
            let vv: Vec<(u64, u64)> = v.iter_mut().map(|(k, v)| (*k, *v)).collect();
            let bv: Vec<(u64, u64)> = b.iter_mut().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(vv, bv);
        }
    }
}
