/* relerr.h — the error measures the trainer's tests compare against their PyTorch references with. */
#ifndef LVD_TEST_RELERR_H
#define LVD_TEST_RELERR_H

#include <math.h>
#include <stddef.h>

/* ||got - want||_max / ||want||_max (NaN fails: it compares as larger than any tolerance). */
static inline double rel_err(const float *got, const float *want, size_t n)
{
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= err))
            err = e;
        if (fabs((double)want[i]) > scale)
            scale = fabs((double)want[i]);
    }
    return err / (scale > 0.0 ? scale : 1.0);
}

/* |got - want| / |want| (|want| 0: absolute), NaN as infinity. */
static inline double rel1(double got, double want)
{
    double e = fabs(got - want) / (fabs(want) > 0.0 ? fabs(want) : 1.0);
    return e == e ? e : INFINITY;
}

#endif
