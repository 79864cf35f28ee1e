/* schedule.c — see schedule.h. */
#include "schedule.h"

#include <assert.h>
#include <math.h>

#include "err.h"

int sched_cosine_init(sched_cosine *s, double base_value, double final_value, int64_t total_iters,
                      int64_t warmup_iters, double start_warmup_value, int64_t freeze_iters)
{
    if (total_iters < 0 || warmup_iters < 0 || freeze_iters < 0 || warmup_iters + freeze_iters > total_iters)
        return lvd_fail("cosine schedule: %lld warmup + %lld frozen iterations do not fit in %lld",
                        (long long)warmup_iters, (long long)freeze_iters, (long long)total_iters);
    s->base_value = base_value;
    s->final_value = final_value;
    s->start_warmup_value = start_warmup_value;
    s->total_iters = total_iters;
    s->warmup_iters = warmup_iters;
    s->freeze_iters = freeze_iters;
    s->zero_iters = 0;
    return 0;
}

double sched_cosine_at(const sched_cosine *s, int64_t it)
{
    assert(it >= 0);
    if (it >= s->total_iters)
        return s->final_value;
    if (it < s->zero_iters || it < s->freeze_iters)
        return 0.0;
    int64_t i = it - s->freeze_iters;
    int64_t w = s->warmup_iters;
    if (i < w) {
        /* numpy.linspace(start, base, w): arange(w) * step + start with step = (base - start) / (w - 1),
         * and the last element set to base exactly; w == 1 gives [start] */
        if (w == 1)
            return s->start_warmup_value;
        if (i == w - 1)
            return s->base_value;
        double step = (s->base_value - s->start_warmup_value) / (double)(w - 1);
        return (double)i * step + s->start_warmup_value;
    }
    i -= w;
    double n = (double)(s->total_iters - s->warmup_iters - s->freeze_iters); /* > 0 here */
    /* final + 0.5 * (base - final) * (1 + cos(pi * i / n)), evaluated left to right as numpy does */
    return s->final_value + 0.5 * (s->base_value - s->final_value) * (1.0 + cos(M_PI * (double)i / n));
}

void sched_recipe_defaults(sched_recipe_config *c)
{
    c->epoch_length = 1250;
    c->epochs = 100;
    c->batch_size = 1024;
    c->base_lr = 0.004;
    c->min_lr = 1.0e-6;
    c->warmup_epochs = 10;
    c->weight_decay = 0.04;
    c->weight_decay_end = 0.4;
    c->momentum_teacher = 0.992;
    c->final_momentum_teacher = 1.0;
    c->warmup_teacher_temp = 0.04;
    c->teacher_temp = 0.07;
    c->warmup_teacher_temp_epochs = 30;
    c->freeze_last_layer_epochs = 1;
}

int sched_recipe_init(sched_recipe *s, const sched_recipe_config *c)
{
    if (c->epoch_length < 1 || c->epochs < 1 || c->batch_size < 1)
        return lvd_fail("schedules: epoch length %lld, epochs %lld and batch size %lld must be >= 1",
                        (long long)c->epoch_length, (long long)c->epochs, (long long)c->batch_size);
    if (c->warmup_epochs < 0 || c->warmup_teacher_temp_epochs < 0 || c->freeze_last_layer_epochs < 0)
        return lvd_fail("schedules: warmup and freeze epochs must be >= 0");
    int64_t total = c->epochs * c->epoch_length;
    /* apply_scaling_rules_to_cfg, sqrt_wrt_1024 */
    s->lr = c->base_lr * sqrt((double)c->batch_size / 1024.0);
    if (sched_cosine_init(&s->lr_s, s->lr, c->min_lr, total, c->warmup_epochs * c->epoch_length, 0.0, 0) != 0)
        return lvd_fail_ctx("lr schedule");
    if (sched_cosine_init(&s->wd_s, c->weight_decay, c->weight_decay_end, total, 0, 0.0, 0) != 0)
        return lvd_fail_ctx("weight decay schedule");
    if (sched_cosine_init(&s->mom_s, c->momentum_teacher, c->final_momentum_teacher, total, 0, 0.0, 0) != 0)
        return lvd_fail_ctx("teacher momentum schedule");
    /* total = warmup: the cosine part is empty and the schedule stays at teacher_temp afterwards */
    int64_t tw = c->warmup_teacher_temp_epochs * c->epoch_length;
    if (sched_cosine_init(&s->temp_s, c->teacher_temp, c->teacher_temp, tw, tw, c->warmup_teacher_temp, 0) != 0)
        return lvd_fail_ctx("teacher temperature schedule");
    s->last_s = s->lr_s;
    int64_t z = c->freeze_last_layer_epochs * c->epoch_length;
    s->last_s.zero_iters = z < total ? z : total; /* a numpy slice past the end stops at the end */
    return 0;
}

void sched_recipe_at(const sched_recipe *s, int64_t it, sched_values *out)
{
    out->lr = sched_cosine_at(&s->lr_s, it);
    out->wd = sched_cosine_at(&s->wd_s, it);
    out->momentum = sched_cosine_at(&s->mom_s, it);
    out->teacher_temp = sched_cosine_at(&s->temp_s, it);
    out->last_layer_lr = sched_cosine_at(&s->last_s, it);
}
