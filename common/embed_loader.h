/* embed_loader.h — a loader thread that reads, decodes and preprocesses the next batch of working images while
 * the caller runs the previous one through the model: two batch slots, used in turn (double buffering).
 *
 * Each item names a working image by the file that holds it and a byte range (a member of an img-NNNNNN.tar
 * shard); the loader reads it (shard_read_at), decodes it (img_decode) and applies DINOv2's evaluation
 * transform (preprocess_image: resize the shorter side, center crop, ImageNet normalisation) into its place of
 * the slot's input tensor. A batch is shared out among `threads` threads (the loader thread and helpers it
 * starts per batch). An item that cannot be loaded gets ok = 0 and a readable error naming the file and offset;
 * the rest of the batch is unaffected.
 *
 * Protocol (one caller thread): fill a slot's items and n, embed_loader_queue(k); later embed_loader_wait(k),
 * use items[i].ok/error and x, then embed_loader_release(k). Queue slots in the order the loader takes them:
 * embed_loader_next() first, then alternate. Memory: two slots of batch items and batch * 3 * crop * crop floats.
 */
#ifndef LVD_EMBED_LOADER_H
#define LVD_EMBED_LOADER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define EMBED_LOADER_MAX_THREADS 16
#define EMBED_LOADER_PATH_MAX (4096 + 256) /* a work directory (STAGE_PATH_MAX) + a shard path under it */

typedef struct embed_load_item {
    int64_t image_id;                 /* the caller's: passed through */
    char path[EMBED_LOADER_PATH_MAX]; /* file holding the encoded image (a working image shard) */
    uint64_t offset, size;            /* byte range of the encoded image in path */
    int ok;                           /* set by the loader: 1 loaded into x, 0 failed (see error) */
    char error[384];                  /* set by the loader when ok = 0 */
} embed_load_item;

typedef struct embed_load_slot {
    embed_load_item *items; /* batch entries; the first n are the batch */
    int n;                  /* 0 < n <= batch when queued */
    float *x;               /* (batch, 3, crop, crop) float32: row i is items[i]'s image when ok */
    int state;              /* the loader's (empty, queued, ready) */
} embed_load_slot;

typedef struct embed_loader {
    embed_load_slot slots[2];
    /* the loader's own */
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_init, started;
    int next; /* slot the loader takes next */
    int stop;
    int threads;
    uint32_t resize, crop;
    embed_load_slot *cur; /* the slot being worked on, shared with the helper threads */
    atomic_int cur_next;
} embed_loader;

/* Allocates the two slots of batch items of (3, crop, crop) and starts the loader thread; threads in
 * 1..EMBED_LOADER_MAX_THREADS, crop <= resize. *l must be zeroed first. Returns 0 or -1 (message set); either
 * way embed_loader_free releases what was set up. */
int embed_loader_start(embed_loader *l, int threads, int32_t batch, uint32_t resize, uint32_t crop);

/* The slot the loader takes next (0 or 1): where an idle loader's next batch goes. */
int embed_loader_next(embed_loader *l);

/* Hands slot k (items and n filled) to the loader. */
void embed_loader_queue(embed_loader *l, int k);

/* Waits until the loader has finished queued slot k. */
void embed_loader_wait(embed_loader *l, int k);

/* Marks finished slot k empty again, so it can be filled and queued. */
void embed_loader_release(embed_loader *l, int k);

/* Stops the loader thread (after the slot it is working on, if any), joins it and frees the slots. Safe on a
 * zeroed loader and after a failed embed_loader_start. Queued slots should be waited for first. */
void embed_loader_free(embed_loader *l);

#endif
