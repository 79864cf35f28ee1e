/* dist.c — the processes of a run (dist.h). */
#include "dist.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#ifdef LVD_HAVE_MPI
#include <mpi.h>
#endif

/* The variables a launcher sets in each process it starts: OpenMPI's mpirun, PMIx (srun --mpi=pmix, prterun),
 * PMI (srun --mpi=pmi2, MPICH's hydra). */
static const char *launcher_var(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return vars[i];
    return NULL;
}

int dist_built_with_mpi(void)
{
#ifdef LVD_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

#ifdef LVD_HAVE_MPI
static int mpi_fail(int code, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "error %d", code);
    return lvd_fail("%s: %s", what, msg);
}
#endif

int dist_init(lvd_dist *d, int *argc, char ***argv)
{
    memset(d, 0, sizeof *d);
    d->ranks = 1;
    const char *var = launcher_var();
    if (!var)
        return 0;
#ifdef LVD_HAVE_MPI
    int rc = MPI_Init(argc, argv);
    if (rc != MPI_SUCCESS)
        return lvd_fail("MPI_Init failed (started by a launcher: %s is set)", var);
    d->mpi = 1;
    /* Errors come back as codes (reported with their MPI message) instead of aborting every rank. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    d->rank = rank;
    d->ranks = size;
    return 0;
#else
    (void)argc, (void)argv;
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    if (!size)
        size = getenv("PMI_SIZE");
    if (size && atoi(size) == 1)
        return 0; /* a launcher's single process is one process */
    return lvd_fail("started by an MPI launcher (%s is set) but this lvd was built without MPI: install "
                    "libopenmpi-dev and rebuild (scripts/bootstrap.sh), or run one process without the launcher",
                    var);
#endif
}

void dist_finalize(lvd_dist *d)
{
#ifdef LVD_HAVE_MPI
    if (d->mpi)
        MPI_Finalize();
#endif
    d->mpi = 0;
}

int dist_sum_f32(lvd_dist *d, float *buf, size_t n, float scale)
{
    if (d->ranks == 1)
        return 0;
#ifdef LVD_HAVE_MPI
    for (size_t off = 0; off < n; off += DIST_BUCKET) {
        size_t m = n - off < DIST_BUCKET ? n - off : DIST_BUCKET;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)m, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "all-reduce of the gradients");
    }
    if (scale != 1.0f)
        for (size_t i = 0; i < n; i++)
            buf[i] *= scale;
    return 0;
#else
    (void)buf, (void)n, (void)scale;
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

int dist_reduce_f64(lvd_dist *d, double *buf, int64_t n, int max)
{
    if (d->ranks == 1 || n == 0)
        return 0;
#ifdef LVD_HAVE_MPI
    for (int64_t off = 0; off < n; off += DIST_BUCKET) {
        int64_t m = n - off < DIST_BUCKET ? n - off : DIST_BUCKET;
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)m, MPI_DOUBLE, max ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "all-reduce of float64 values");
    }
    return 0;
#else
    (void)buf, (void)max;
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

int dist_max_i64(lvd_dist *d, int64_t v, int64_t *out)
{
    *out = v;
    if (d->ranks == 1)
        return 0;
#ifdef LVD_HAVE_MPI
    long long x = v, y = 0;
    int rc = MPI_Allreduce(&x, &y, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "all-reduce of a flag");
    *out = y;
    return 0;
#else
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

int dist_allgather_u64(lvd_dist *d, const uint64_t *mine, size_t n, uint64_t *all)
{
    if (d->ranks == 1) {
        memcpy(all, mine, n * sizeof *all);
        return 0;
    }
#ifdef LVD_HAVE_MPI
    int rc = MPI_Allgather(mine, (int)n, MPI_UINT64_T, all, (int)n, MPI_UINT64_T, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "all-gather");
#else
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

int dist_check(lvd_dist *d, uint64_t h, const char *what)
{
    if (d->ranks == 1)
        return 0;
    uint64_t *all = malloc((size_t)d->ranks * sizeof *all);
    if (!all)
        return lvd_fail("out of memory");
    int rc = dist_allgather_u64(d, &h, 1, all);
    for (int32_t r = 1; rc == 0 && r < d->ranks; r++)
        if (all[r] != all[0])
            rc = lvd_fail("ranks 0 and %d hold different %s (hashes %016" PRIx64 " and %016" PRIx64 ")", r, what,
                          all[0], all[r]);
    free(all);
    return rc;
}

int dist_bcast(lvd_dist *d, void *buf, size_t bytes, int32_t root)
{
    if (d->ranks == 1 || bytes == 0)
        return 0;
#ifdef LVD_HAVE_MPI
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < bytes; off += chunk) {
        size_t m = bytes - off < chunk ? bytes - off : chunk;
        int rc = MPI_Bcast((char *)buf + off, (int)m, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, "broadcast");
    }
    return 0;
#else
    (void)buf, (void)root;
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

#ifdef LVD_HAVE_MPI
/* The counts and displacements (rows) of a scatter or gather, in a row datatype; -1 past MPI's int counts. */
static int rows_layout(lvd_dist *d, size_t row_bytes, const int64_t *rows_of, int *counts, int *displs,
                       MPI_Datatype *row)
{
    int64_t at = 0;
    for (int32_t r = 0; r < d->ranks; r++) {
        if (rows_of[r] < 0 || at + rows_of[r] > INT32_MAX)
            return lvd_fail("scatter/gather of rows: %" PRId64 " rows in all, past 2^31 - 1", at + rows_of[r]);
        counts[r] = (int)rows_of[r];
        displs[r] = (int)at;
        at += rows_of[r];
    }
    if (row_bytes == 0 || row_bytes > INT32_MAX)
        return lvd_fail("scatter/gather of rows: rows of %zu bytes", row_bytes);
    int rc = MPI_Type_contiguous((int)row_bytes, MPI_BYTE, row);
    if (rc == MPI_SUCCESS)
        rc = MPI_Type_commit(row);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "a row datatype");
}

/* Scatter (dir 0) or gather (dir 1) of rows between rank 0's all and each rank's mine. */
static int rows_move(lvd_dist *d, int dir, const void *src, size_t row_bytes, const int64_t *rows_of, void *dst)
{
    int *counts = malloc(2 * (size_t)d->ranks * sizeof *counts);
    if (!counts)
        return lvd_fail("out of memory");
    int *displs = counts + d->ranks;
    MPI_Datatype row;
    int rc = rows_layout(d, row_bytes, rows_of, counts, displs, &row);
    if (rc == 0) {
        /* rank 0's part is the first rows of all: in place when its mine is all */
        int in_place = d->rank == 0 && src == dst;
        int mrc = dir == 0 ? MPI_Scatterv(src, counts, displs, row, in_place ? MPI_IN_PLACE : dst, counts[d->rank],
                                          row, 0, MPI_COMM_WORLD)
                           : MPI_Gatherv(in_place ? MPI_IN_PLACE : src, counts[d->rank], row, dst, counts, displs,
                                         row, 0, MPI_COMM_WORLD);
        MPI_Type_free(&row);
        rc = mrc == MPI_SUCCESS ? 0 : mpi_fail(mrc, dir == 0 ? "scatter of rows" : "gather of rows");
    }
    free(counts);
    return rc;
}
#endif

int dist_scatter_rows(lvd_dist *d, const void *all, size_t row_bytes, const int64_t *rows_of, void *mine)
{
    if (d->ranks == 1) {
        if (rows_of[0] > 0 && mine != all)
            memcpy(mine, all, (size_t)rows_of[0] * row_bytes);
        return 0;
    }
#ifdef LVD_HAVE_MPI
    return rows_move(d, 0, all, row_bytes, rows_of, mine);
#else
    (void)all, (void)row_bytes, (void)mine;
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}

int dist_gather_rows(lvd_dist *d, const void *mine, size_t row_bytes, const int64_t *rows_of, void *all)
{
    if (d->ranks == 1) {
        if (rows_of[0] > 0 && mine != all)
            memcpy(all, mine, (size_t)rows_of[0] * row_bytes);
        return 0;
    }
#ifdef LVD_HAVE_MPI
    return rows_move(d, 1, mine, row_bytes, rows_of, all);
#else
    (void)mine, (void)row_bytes, (void)all;
    return lvd_fail("internal: %d ranks without MPI", d->ranks);
#endif
}
