/* neofleet forest kernel: blocked, branch-free traversal of a tree ensemble.
 *
 * TL2cgen's generated if/else code is fastest for a row or a few (branch prediction
 * learns the hot paths), but on large batches of varied rows every split is a
 * mispredicted branch. This kernel walks BLOCK rows through one tree at a time, one
 * level per step, with the next node chosen by arithmetic rather than a jump, so the
 * dependent loads of many rows overlap. Leaves loop to themselves, so every row takes
 * exactly depth[t] steps. Margins are accumulated in double; the runtime averages, adds
 * base scores and applies the postprocessor.
 *
 * The runtime checks every index in the node table before calling in (bounds are not
 * checked here, on the hot path).
 */
#include <math.h>
#include <stdint.h>

typedef struct {
  double threshold;
  int32_t feature;
  int32_t left;
  int32_t right;
  int32_t missing; /* child taken when the feature is NaN */
  int32_t eq_left; /* 1 when x == threshold goes left ("<=" splits) */
  int32_t leaf;    /* index of the leaf's values in leaf_values (leaves only) */
} neofleet_node_t;

#define NEOFLEET_BLOCK 32

#define NEOFLEET_FOREST(NAME, REAL)                                                        \
  void NAME(const neofleet_node_t* nodes, const int32_t* roots, const int32_t* depths,     \
            int32_t ntree, const double* leaf_values, const int32_t* out_offset,           \
            const int32_t* out_width, const REAL* X, int64_t rows, int32_t nfeat,          \
            int32_t nout, double* out) {                                                   \
    for (int64_t r0 = 0; r0 < rows; r0 += NEOFLEET_BLOCK) {                                \
      const int nb = rows - r0 < NEOFLEET_BLOCK ? (int)(rows - r0) : NEOFLEET_BLOCK;       \
      const REAL* xb = X + r0 * nfeat;                                                     \
      double* ob = out + r0 * nout;                                                        \
      for (int32_t t = 0; t < ntree; ++t) {                                                \
        int32_t idx[NEOFLEET_BLOCK];                                                       \
        for (int r = 0; r < nb; ++r) idx[r] = roots[t];                                    \
        for (int32_t d = 0; d < depths[t]; ++d) {                                          \
          for (int r = 0; r < nb; ++r) {                                                   \
            const neofleet_node_t* n = &nodes[idx[r]];                                     \
            const REAL x = xb[(int64_t)r * nfeat + n->feature];                            \
            const double xd = (double)x;                                                   \
            const int go_left = (xd < n->threshold) | ((xd == n->threshold) & n->eq_left); \
            const int32_t next = go_left ? n->left : n->right;                             \
            idx[r] = isnan(x) ? n->missing : next;                                         \
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

NEOFLEET_FOREST(neofleet_forest_predict_f32, float)
NEOFLEET_FOREST(neofleet_forest_predict_f64, double)
