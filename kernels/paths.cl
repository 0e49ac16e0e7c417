/* Simple paths: exact counting by (visited set, last vertex) and listing by depth-first walks
 * (host side: clnet/opencl/paths.py; the layout is explained in clnet/common/paths.py).
 *
 * Counting, for one source whose N - 1 other vertices are relabelled 0..n-1: layer k holds
 * the states (mask, j) with popcount(mask) = k, mask in colex order, j the position of the
 * path's last vertex among the set bits, at rank(mask) * k + j. A state of layer k is the
 * sum of the states of layer k - 1 it extends: (mask without w, v) for every predecessor v
 * of w inside the mask. Every work-item owns a contiguous range of masks of one layer and
 * writes only its own states and its own per-vertex totals (no atomics: the totals of a
 * layer are summed over work-items in a fixed order by the next layer's launch).
 * Counts are 128-bit integers in two ulongs (x = low word, y = high word). */

#define CLNET_BINOM_SIZE 33
#define CLNET_COUNT_MAX 32
#define CLNET_LIST_MAX 64

inline ulong2 clnet_add128(ulong2 a, ulong2 b)
{
    const ulong lo = a.x + b.x;
    return (ulong2)(lo, a.y + b.y + (lo < a.x ? 1UL : 0UL));
}

/* Index of the lowest set bit (OpenCL C 1.2 has popcount but no ctz). */
inline int clnet_low_bit32(uint m) { return (int)popcount((m & (0u - m)) - 1u); }
inline int clnet_low_bit64(ulong m) { return (int)popcount((m & (0UL - m)) - 1UL); }

/* Global size (items, sources of this batch). Work-item (i, s) counts the states of masks
 * [i * masks_per_item, ...) of source first_source + s and, for i < n, first adds up the
 * previous layer's totals of vertex i (that layer's launch has finished: one in-order queue). */
__kernel void clnet_paths_count_layer(const int n, const int k, const long n_masks,
                                      const long masks_per_item, const int items,
                                      const int prev_items, const int first_source,
                                      __global const uint *binom, __global const uint *pred,
                                      __global const uint *start, __global const ulong2 *prev,
                                      __global ulong2 *next, __global ulong2 *partial,
                                      __global const ulong2 *prev_partial, __global ulong2 *out)
{
    const int item = get_global_id(0);
    const int s = get_global_id(1);
    const int source = first_source + s;
    if (k > 1 && item < n) {
        ulong2 sum = (ulong2)(0, 0);
        for (int i = 0; i < prev_items; ++i)
            sum = clnet_add128(sum, prev_partial[((long)s * prev_items + i) * n + item]);
        out[((long)source * n + item) * (n + 1) + k - 1] = sum;
    }
    if (item >= items)
        return;
    long rank = item * masks_per_item;
    const long stop = min(rank + masks_per_item, n_masks);
    const long prev_block = k > 1 ? (long)binom[n * CLNET_BINOM_SIZE + k - 1] * (k - 1) : 0;
    __global const ulong2 *below = prev + s * prev_block;
    __global ulong2 *here = next + s * n_masks * k;
    __global const uint *into = pred + (long)source * n;
    const uint from_source = start[source];
    ulong2 total[CLNET_COUNT_MAX];
    for (int w = 0; w < n; ++w)
        total[w] = (ulong2)(0, 0);

    /* The mask of colex rank `rank`: its bits from the highest down. */
    uint mask = 0;
    long rest = rank;
    int top = n - 1;
    for (int i = k; i >= 1 && rank < stop; --i) {
        int b = top;
        while (binom[b * CLNET_BINOM_SIZE + i] > rest)
            --b;
        mask |= 1u << b;
        rest -= binom[b * CLNET_BINOM_SIZE + i];
        top = b - 1;
    }

    uchar bits[CLNET_COUNT_MAX];
    for (; rank < stop; ++rank) {
        int count = 0;
        long shifted = 0; /* sum_i C(b_i, i): the rank terms of the bits after a removed one */
        for (uint m = mask; m; m &= m - 1u) {
            const int b = clnet_low_bit32(m);
            shifted += binom[b * CLNET_BINOM_SIZE + count];
            bits[count++] = (uchar)b;
        }
        long before = 0; /* sum_{i<t} C(b_i, i + 1) */
        long through = 0; /* sum_{i<=t} C(b_i, i) */
        for (int t = 0; t < k; ++t) {
            const int w = bits[t];
            through += binom[w * CLNET_BINOM_SIZE + t];
            ulong2 acc = (ulong2)(0, 0);
            if (k == 1) {
                acc.x = (from_source >> w) & 1u;
            } else {
                const long sub = (before + shifted - through) * (long)(k - 1);
                for (uint p = into[w] & mask; p; p &= p - 1u) {
                    const int v = clnet_low_bit32(p);
                    const int at = (int)popcount(mask & ((1u << v) - 1u)) - (v > w ? 1 : 0);
                    acc = clnet_add128(acc, below[sub + at]);
                }
            }
            here[rank * k + t] = acc;
            total[w] = clnet_add128(total[w], acc);
            before += binom[w * CLNET_BINOM_SIZE + t + 1];
        }
        /* Gosper's step: the next mask of the same popcount, in increasing (colex) order. */
        const uint low = mask & (0u - mask);
        const uint ripple = mask + low;
        mask = (((ripple ^ mask) >> 2) / low) | ripple;
    }
    for (int w = 0; w < n; ++w)
        partial[((long)s * items + item) * n + w] = total[w];
}

/* The last layer's totals: out[source][w][k] = the sum over work-items, in order. */
__kernel void clnet_paths_count_reduce(const int n, const int items, const int k,
                                       const int first_source, __global const ulong2 *partial,
                                       __global ulong2 *out)
{
    const int w = get_global_id(0);
    const int s = get_global_id(1);
    ulong2 sum = (ulong2)(0, 0);
    for (int i = 0; i < items; ++i)
        sum = clnet_add128(sum, partial[((long)s * items + i) * n + w]);
    out[((long)(first_source + s) * n + w) * (n + 1) + k] = sum;
}

/* Listing. Every prefix (a path of `base` edges made on the host) is the root of one walk;
 * the walk's state between launches is its current path and a mode:
 *   0 descend: the current path was handled, extend it next;
 *   1 pending: the current path is accepted but was not written yet (the output was full);
 *   2 done:    every path below the prefix was listed.
 * The next vertex to try after backtracking from x at some depth is the lowest unvisited
 * successor of the previous vertex above x, so the path alone is the whole stack.
 * Work-item i continues walk active[i] for at most `step_budget` steps and writes at most
 * `cap` rows at rows[(i * cap + r) * width ...], padded with -1, and its row count. */
#define CLNET_DESCEND 0
#define CLNET_PENDING 1
#define CLNET_DONE 2

__kernel void clnet_paths_list(const int width, const int min_length, const int max_length,
                               __global const ulong *succ, const ulong targets,
                               __global const int *active, __global int *state_path,
                               __global int *state_info, const int cap, const long step_budget,
                               __global int *rows, __global int *counts)
{
    const int item = get_global_id(0);
    const long walk = active[item];
    __global int *saved = state_path + walk * width;
    __global int *info = state_info + walk * 3;
    const int base = info[0];
    int depth = info[1];
    int mode = info[2];
    int path[CLNET_LIST_MAX];
    ulong visited = 0;
    for (int d = 0; d <= depth; ++d) {
        path[d] = saved[d];
        visited |= 1UL << path[d];
    }
    int written = 0;
    __global int *out = rows + (long)item * cap * width;
    long steps = 0;
    while (mode != CLNET_DONE) {
        if (mode == CLNET_PENDING) {
            if (written == cap)
                break;
            for (int d = 0; d < width; ++d)
                out[(long)written * width + d] = d <= depth ? path[d] : -1;
            ++written;
            mode = CLNET_DESCEND;
        }
        if (steps++ == step_budget)
            break;
        const ulong deeper = depth < max_length ? succ[path[depth]] & ~visited : 0UL;
        if (deeper) {
            path[++depth] = clnet_low_bit64(deeper);
            visited |= 1UL << path[depth];
        } else {
            for (;;) { /* the next sibling at the deepest depth that has one */
                if (depth == base) {
                    mode = CLNET_DONE;
                    break;
                }
                const int x = path[depth];
                visited &= ~(1UL << x);
                const ulong above = x == 63 ? 0UL : ~((2UL << x) - 1UL);
                const ulong sibling = succ[path[depth - 1]] & ~visited & above;
                if (sibling) {
                    path[depth] = clnet_low_bit64(sibling);
                    visited |= 1UL << path[depth];
                    break;
                }
                --depth;
            }
            if (mode == CLNET_DONE)
                break;
        }
        if (depth >= min_length && ((targets >> path[depth]) & 1UL))
            mode = CLNET_PENDING;
    }
    for (int d = 0; d <= depth; ++d)
        saved[d] = path[d];
    info[1] = depth;
    info[2] = mode;
    counts[item] = written;
}

/* Rows of walk i (rows[i * cap ...], offsets[i + 1] - offsets[i] of them) to out[offsets[i] ...]. */
__kernel void clnet_paths_compact(const int width, const int cap, __global const int *rows,
                                  __global const int *offsets, __global int *out)
{
    const int item = get_global_id(0);
    const long first = offsets[item];
    const long length = ((long)offsets[item + 1] - first) * width;
    __global const int *from = rows + (long)item * cap * width;
    __global int *to = out + first * width;
    for (long e = 0; e < length; ++e)
        to[e] = from[e];
}
