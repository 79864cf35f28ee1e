/* phash.c — imagehash-compatible 64-bit DCT perceptual hash (see phash.h). */
#include "phash.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "resize.h"

#define PH_N 32  /* side of the downsampled grey image (hash_size 8 * highfreq_factor 4) */
#define PH_K 8   /* side of the kept low-frequency block */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* cos(pi k (2i + 1) / 2N) for the DCT below: the same for every image, computed once per process. */
static double ph_cos[PH_K][PH_N];
static pthread_once_t ph_cos_once = PTHREAD_ONCE_INIT;

static void ph_cos_init(void)
{
    for (int k = 0; k < PH_K; k++)
        for (int i = 0; i < PH_N; i++)
            ph_cos[k][i] = cos(M_PI * k * (2 * i + 1) / (2.0 * PH_N));
}

/* An empty image or a failed allocation hashes to 0: the contract has no error channel, and 0 is what a
 * flat picture tends to give as well, so such inputs simply look alike. */
uint64_t phash_compute(const img_rgb *im)
{
    if (im == NULL || im->px == NULL || im->w == 0 || im->h == 0)
        return 0;
    size_t n = (size_t)im->w * im->h;
    uint8_t *gray = malloc(n);
    if (gray == NULL)
        return 0;
    /* Pillow's RGB -> "L": ITU-R 601-2 weights 0.299/0.587/0.114 in 16-bit fixed point, rounded. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = im->px + 3 * i;
        gray[i] = (uint8_t)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
    }
    /* imagehash resizes with Pillow's ANTIALIAS, i.e. Lanczos-3 */
    uint8_t small[PH_N * PH_N];
    int rc = resize_plane(gray, im->w, im->h, 1, small, PH_N, PH_N, RESIZE_FILTER_LANCZOS);
    free(gray);
    if (rc != 0)
        return 0;

    /* Unnormalised DCT-II, y[k] = sum_n x[n] cos(pi k (2n + 1) / 2N), first over rows (axis 0), then over
     * columns; only the PH_K lowest frequencies of each axis are needed. scipy's extra factor 2 per axis
     * scales every coefficient alike and cannot change the comparison with the median. */
    pthread_once(&ph_cos_once, ph_cos_init);
    const double (*cs)[PH_N] = ph_cos;
    double t[PH_K][PH_N]; /* t[k][x]: frequency k along y, column x */
    for (int k = 0; k < PH_K; k++)
        for (int x = 0; x < PH_N; x++) {
            double s = 0.0;
            for (int y = 0; y < PH_N; y++)
                s += small[y * PH_N + x] * cs[k][y];
            t[k][x] = s;
        }
    double d[PH_K * PH_K], sorted[PH_K * PH_K];
    for (int k = 0; k < PH_K; k++)
        for (int l = 0; l < PH_K; l++) {
            double s = 0.0;
            for (int x = 0; x < PH_N; x++)
                s += t[k][x] * cs[l][x];
            d[k * PH_K + l] = sorted[k * PH_K + l] = s;
        }
    qsort(sorted, PH_K * PH_K, sizeof sorted[0], cmp_double);
    double median = (sorted[PH_K * PH_K / 2 - 1] + sorted[PH_K * PH_K / 2]) / 2.0;
    uint64_t h = 0;
    for (int i = 0; i < PH_K * PH_K; i++)
        if (d[i] > median)
            h |= (uint64_t)1 << (63 - i);
    return h;
}

int phash_distance(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ b;
    int n = 0;
    for (; x != 0; x &= x - 1)
        n++;
    return n;
}
