//! Nested-set numbering of a trace's span tree.
//!
//! Each span gets a left and a right number from a depth-first walk, and a parent number (its
//! parent's left number, -1 for roots). `a` is an ancestor of `d` exactly when
//! `a.left < d.left && d.right < a.right`, which turns TraceQL's structural operators into range
//! joins. Spans that cannot be placed in the tree (a missing parent, a duplicated span id) get
//! 0 for all three numbers: "unknown", which never satisfies a positive relation.

use std::collections::HashMap;

use super::SpanRow;

/// The nested-set numbers of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NestedSet {
    pub left: i32,
    pub right: i32,
    pub parent: i32,
}

/// Numbers the spans of one trace; the result is in the order of `spans`.
pub fn compute(spans: &[&SpanRow]) -> Vec<NestedSet> {
    let mut result = vec![NestedSet::default(); spans.len()];
    let mut index: HashMap<[u8; 8], usize> = HashMap::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        if index.insert(span.span_id, i).is_some() {
            // A duplicated span id makes parent links ambiguous: the whole tree is unknown.
            return result;
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id {
            None => roots.push(i),
            Some(parent) => {
                if let Some(&p) = index.get(&parent) {
                    children[p].push(i);
                }
            }
        }
    }
    let by_start = |a: &usize, b: &usize| {
        spans[*a]
            .start_time_unix_nano
            .cmp(&spans[*b].start_time_unix_nano)
            .then(spans[*a].span_id.cmp(&spans[*b].span_id))
    };
    roots.sort_by(by_start);
    for list in &mut children {
        list.sort_by(by_start);
    }

    let mut counter = 1i32;
    // Explicit stack of (span, next child to visit) so deep traces cannot overflow the stack.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for &root in &roots {
        result[root] = NestedSet {
            left: counter,
            right: 0,
            parent: -1,
        };
        counter += 1;
        stack.push((root, 0));
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&child) = children[node].get(*next) {
                *next += 1;
                result[child] = NestedSet {
                    left: counter,
                    right: 0,
                    parent: result[node].left,
                };
                counter += 1;
                stack.push((child, 0));
            } else {
                result[node].right = counter;
                counter += 1;
                stack.pop();
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::otlp::tests::span;

    #[test]
    fn numbers_a_tree_depth_first() {
        let root = span(1, None, 0);
        let a = span(2, Some(1), 10);
        let b = span(3, Some(1), 20);
        let a1 = span(4, Some(2), 11);
        let sets = compute(&[&b, &a1, &root, &a]);
        let [b, a1, root, a] = [sets[0], sets[1], sets[2], sets[3]];
        assert_eq!(
            root,
            NestedSet {
                left: 1,
                right: 8,
                parent: -1
            }
        );
        assert_eq!(
            a,
            NestedSet {
                left: 2,
                right: 5,
                parent: 1
            }
        );
        assert_eq!(
            a1,
            NestedSet {
                left: 3,
                right: 4,
                parent: 2
            }
        );
        assert_eq!(
            b,
            NestedSet {
                left: 6,
                right: 7,
                parent: 1
            }
        );
    }

    #[test]
    fn orphans_and_their_subtrees_are_unknown() {
        let root = span(1, None, 0);
        let orphan = span(2, Some(9), 10);
        let under_orphan = span(3, Some(2), 11);
        let sets = compute(&[&root, &orphan, &under_orphan]);
        assert_eq!(
            sets[0],
            NestedSet {
                left: 1,
                right: 2,
                parent: -1
            }
        );
        assert_eq!(sets[1], NestedSet::default());
        assert_eq!(sets[2], NestedSet::default());
    }

    #[test]
    fn duplicated_span_ids_make_the_trace_unknown() {
        let root = span(1, None, 0);
        let dup = span(1, None, 5);
        assert!(
            compute(&[&root, &dup])
                .iter()
                .all(|s| *s == NestedSet::default())
        );
    }
}
