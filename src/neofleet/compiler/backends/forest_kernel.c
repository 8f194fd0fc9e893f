/* neofleet forest kernel: blocked, branch-free traversal of a tree ensemble.
 *
 * TL2cgen's generated if/else code is fastest for a row or a few (branch prediction
 * learns the hot paths), but on large batches of varied rows every split is a
 * mispredicted branch. This kernel walks BLOCK rows through one tree at a time, one
 * level per step, with the next node chosen by arithmetic rather than a jump, so the
 * dependent loads of many rows overlap. Fewer than NEOFLEET_FEW_ROWS rows cannot fill a
 * block: each such row walks NEOFLEET_TREES trees at once instead, so the loads of
 * different trees overlap (3x faster than one tree at a time for a single row of a
 * 500-tree model here, when the table does not fit in L2).
 *
 * Node table (built by neofleet/compiler/backends/forest.py): a node's two children are
 * adjacent, slot0 at `left` and slot1 at `left + 1`; a row goes to slot1 when
 * x >= threshold, or when x is NaN and bit 31 of `feature` is set. Every split of the
 * source model ("<", "<=", ">", ">=", default direction for missing values) is
 * normalised to that rule exactly (thresholds are in the input's own precision, "<="
 * becomes "<" of the next representable value). A leaf has a NaN threshold and points to
 * itself, so every row takes exactly depth[t] steps in tree t. Margins are accumulated in
 * double; the runtime averages, adds base scores and applies the postprocessor.
 *
 * The runtime checks every index in the table before calling in (nothing is checked
 * here, on the hot path).
 */
#include <math.h>
#include <stdint.h>

#define NEOFLEET_BLOCK 64
#define NEOFLEET_FEATURE 0x7fffffffu

typedef struct { float threshold; uint32_t feature; int32_t left; int32_t leaf; } neofleet_node_f32;
typedef struct { double threshold; uint32_t feature; int32_t left; int32_t leaf; int32_t pad; }
    neofleet_node_f64;


#define NEOFLEET_TREES 16
#define NEOFLEET_FEW_ROWS 8

/* One row, NEOFLEET_TREES trees at a time: the trees' dependent loads overlap, which the
   row-blocked loop cannot do for a single row (it would wait on one load per level). */
#define NEOFLEET_FOREST_ROW(NAME, NODE, REAL)                                               \
  static void NAME(const NODE* nodes, const int32_t* roots, const int32_t* depths,         \
                   int32_t ntree, const double* leaf_values, const int32_t* out_offset,    \
                   const int32_t* out_width, const REAL* x, double* o) {                    \
    for (int32_t t0 = 0; t0 < ntree; t0 += NEOFLEET_TREES) {                                \
      const int nt = ntree - t0 < NEOFLEET_TREES ? (int)(ntree - t0) : NEOFLEET_TREES;      \
      int32_t idx[NEOFLEET_TREES];                                                          \
      int32_t depth = 0;                                                                    \
      for (int k = 0; k < nt; ++k) {                                                        \
        idx[k] = roots[t0 + k];                                                             \
        depth = depths[t0 + k] > depth ? depths[t0 + k] : depth;                            \
      }                                                                                     \
      for (int32_t d = 0; d < depth; ++d) {                                                 \
        for (int k = 0; k < nt; ++k) {                                                      \
          const NODE n = nodes[idx[k]];                                                     \
          const REAL v = x[n.feature & NEOFLEET_FEATURE];                                   \
          idx[k] = n.left + ((v >= n.threshold) | (isnan(v) & (int)(n.feature >> 31)));     \
        }                                                                                   \
      }                                                                                     \
      for (int k = 0; k < nt; ++k) {                                                        \
        const int32_t t = t0 + k, w = out_width[t];                                         \
        const double* v = leaf_values + nodes[idx[k]].leaf;                                 \
        for (int j = 0; j < w; ++j) o[out_offset[t] + j] += v[j];                           \
      }                                                                                     \
    }                                                                                       \
  }

#define NEOFLEET_FOREST(NAME, ROWFN, NODE, REAL)                                                  \
  void NAME(const NODE* nodes, const int32_t* roots, const int32_t* depths, int32_t ntree, \
            const double* leaf_values, const int32_t* out_offset, const int32_t* out_width,\
            const REAL* X, int64_t rows, int32_t nfeat, int32_t nout, double* out) {       \
    if (rows < NEOFLEET_FEW_ROWS) {                                                        \
      for (int64_t r = 0; r < rows; ++r)                                                   \
        ROWFN(nodes, roots, depths, ntree, leaf_values, out_offset, out_width,             \
              X + r * nfeat, out + r * nout);                                              \
      return;                                                                              \
    }                                                                                      \
    for (int64_t r0 = 0; r0 < rows; r0 += NEOFLEET_BLOCK) {                                \
      const int nb = rows - r0 < NEOFLEET_BLOCK ? (int)(rows - r0) : NEOFLEET_BLOCK;       \
      const REAL* xb = X + r0 * nfeat;                                                     \
      double* ob = out + r0 * nout;                                                        \
      for (int32_t t = 0; t < ntree; ++t) {                                                \
        int32_t idx[NEOFLEET_BLOCK];                                                       \
        for (int r = 0; r < nb; ++r) idx[r] = roots[t];                                    \
        for (int32_t d = 0; d < depths[t]; ++d) {                                          \
          for (int r = 0; r < nb; ++r) {                                                   \
            const NODE n = nodes[idx[r]];                                                  \
            const REAL x = xb[(int64_t)r * nfeat + (n.feature & NEOFLEET_FEATURE)];        \
            idx[r] = n.left + ((x >= n.threshold) | (isnan(x) & (int)(n.feature >> 31)));  \
          }                                                                                \
        }                                                                                  \
        const int32_t off = out_offset[t], w = out_width[t];                               \
        for (int r = 0; r < nb; ++r) {                                                     \
          const double* v = leaf_values + nodes[idx[r]].leaf;                              \
          double* o = ob + (int64_t)r * nout + off;                                        \
          for (int k = 0; k < w; ++k) o[k] += v[k];                                        \
        }                                                                                  \
      }                                                                                    \
    }                                                                                      \
  }

NEOFLEET_FOREST_ROW(neofleet_forest_row_f32, neofleet_node_f32, float)
NEOFLEET_FOREST_ROW(neofleet_forest_row_f64, neofleet_node_f64, double)
NEOFLEET_FOREST(neofleet_forest_predict_f32, neofleet_forest_row_f32, neofleet_node_f32, float)
NEOFLEET_FOREST(neofleet_forest_predict_f64, neofleet_forest_row_f64, neofleet_node_f64, double)
