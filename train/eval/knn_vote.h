/* knn_vote.h — DINOv2's weighted k-NN classifier (dinov2/eval/knn.py, KnnModule):
 *
 *   sims    = test (q, d) @ train^T          cosine of L2-normalised features, float32 products
 *   top     = the max_k = max(ks) most similar train rows of each test row, by similarity (ties: lower row)
 *   w       = softmax(top sims / T) over those max_k                     (T = 0.07 by default)
 *   p_k[c]  = sum of w over the first k of them whose train label is c, for every k in ks
 *   top-1   = argmax_c p_k (ties: lower class); top-5: the 5 classes of largest p_k (ties: lower class)
 *
 * Note the weights are one softmax over max_k neighbours, reused for every k, as the official code does.
 * A test row is correct at top-n when its label is among those n classes; a test row whose label is not a
 * train class (label -1) is never correct. max_k is clamped to the number of train rows.
 */
#ifndef LVD_EVAL_KNN_VOTE_H
#define LVD_EVAL_KNN_VOTE_H

#include <stdint.h>

#define KNN_VOTE_MAX_KS 16

typedef struct knn_vote_result {
    int32_t k;         /* neighbours voting (after clamping to the train rows) */
    int64_t top1, top5; /* correct test rows */
} knn_vote_result;

/* train (ntrain, dim) with labels train_lab (0..nclass-1), test (ntest, dim) with test_lab (-1: not a train
 * class). ks: nk values >= 1 (nk <= KNN_VOTE_MAX_KS). res: nk results, in the order of ks. If pred is not
 * NULL it receives (nk, ntest, 5) class indices (-1 past nclass): each test row's five best classes per k.
 * threads: 0 for OpenMP's default. Returns 0 or -1 (message set). */
int knn_vote(const float *train, const int32_t *train_lab, int64_t ntrain, const float *test,
             const int32_t *test_lab, int64_t ntest, int32_t dim, int32_t nclass, const int32_t *ks, int nk,
             float temperature, int threads, knn_vote_result *res, int32_t *pred);

#endif
