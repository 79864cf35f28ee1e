/* loader.h — lvd-train's data: batches of multi-crop samples read from a manifest (common/manifest.h).
 *
 * A rank reads its part of each epoch's shuffled order (manifest_order(seed, epoch, rank, ranks)); the stream
 * runs on from one epoch into the next without a gap, as dinov2's InfiniteSampler does, so a batch may span an
 * epoch boundary. Its place in the stream is (epoch, position): position counts entries of the rank's order of
 * that epoch. train_loader_seek() puts the stream anywhere, which is what an exact resume needs.
 *
 * Each batch entry: the sample's bytes (manifest_read), decoded (common/image.h), then every crop drawn and
 * applied (train/augment.h) with the augmentation key (seed, epoch, occurrence), occurrence = the entry's index
 * in the epoch's whole shuffled list (position * ranks + rank): an image listed twice (weight 2) gets two
 * different sets of crops, and the crops do not depend on the thread count or on the batch an entry lands in.
 * A sample whose bytes fail to read or decode is skipped, counted and logged with its key; the next entry of
 * the stream takes its place (never fatal). The masks of the batch's 2 * B global crops come from train/masking,
 * drawn from a stream keyed by (seed, the batch's starting epoch and position).
 *
 * Layout (dinov2's collate_data_and_cast): global (2 * B, 3, G, G) holds global crop 1 of every image, then
 * global crop 2 of every image; local (n_local * B, 3, L, L) holds local crop j of every image for j = 0, 1, ...
 * masks are over the 2 * B global crops in that order.
 *
 * Work is shared out among `threads` threads per batch (pthreads), each with its own read, decode and
 * augmentation buffers; train_loader_next returns when the batch is complete.
 */
#ifndef LVD_TRAIN_LOADER_H
#define LVD_TRAIN_LOADER_H

#include <stdint.h>

#include "manifest.h"
#include "train/augment.h"
#include "train/masking.h"

typedef struct train_loader_opts {
    const manifest *m;        /* open manifest (kept open by the caller) */
    aug_config aug;           /* crops */
    uint64_t seed;            /* train.seed */
    int32_t batch;            /* images per batch on this rank (train.batch_size_per_gpu) */
    uint32_t rank, ranks;     /* this process among ranks (1 process: 0, 1) */
    int32_t patch;            /* student.patch_size: the mask grid is global_size / patch per side */
    double mask_ratio[2];     /* ibot.mask_ratio_min_max */
    double mask_probability;  /* ibot.mask_sample_probability */
    int threads;              /* worker threads, >= 1 */
} train_loader_opts;

typedef struct train_batch {
    int32_t b;                /* images */
    float *global;            /* (2 * B, 3, G, G) */
    float *local;             /* (n_local * B, 3, L, L) */
    mask_batch masks;         /* over the 2 * B global crops */
    uint32_t *samples;        /* (B) manifest sample indices (0-based) of the images */
    uint64_t epoch, position; /* where the batch started in the stream */
} train_batch;

typedef struct train_loader train_loader;

/* Checks the options and allocates the loader; the stream starts at (epoch 0, position 0). 0 or -1. */
int train_loader_open(train_loader **out, const train_loader_opts *o);
void train_loader_close(train_loader *l);

/* Allocates a batch's buffers for l (one arena of floats plus the masks). 0 or -1. */
int train_batch_alloc(const train_loader *l, train_batch *b);
void train_batch_free(train_batch *b);

/* Moves the stream to (epoch, position) (position <= the rank's epoch length). 0 or -1. */
int train_loader_seek(train_loader *l, uint64_t epoch, uint64_t position);

/* Where the next batch starts. */
void train_loader_tell(const train_loader *l, uint64_t *epoch, uint64_t *position);

/* Fills b with the next batch. -1 if no sample of a whole epoch can be read (all failed), or on an error. */
int train_loader_next(train_loader *l, train_batch *b);

/* Samples skipped so far because their bytes failed to read or decode. */
uint64_t train_loader_failed(const train_loader *l);

#endif
