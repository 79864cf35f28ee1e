/* f16.h — IEEE 754 half precision (binary16) to float32, exact: the float16 arrays of .npy files and the F16
 * tensors of safetensors files. Header-only, so both readers share it without linking each other.
 */
#ifndef LVD_F16_H
#define LVD_F16_H

#include <stdint.h>
#include <string.h>

/* The float32 value of half h: every half is exactly representable; subnormals are normalised, infinities and
 * NaNs (payload kept in the top mantissa bits) stay so, the sign of zero is kept. */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t x;
    if (e == 0x1f) {
        x = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
        x = sign | ((e + 112u) << 23) | (m << 13);
    } else if (m == 0) {
        x = sign;
    } else { /* subnormal: normalise */
        uint32_t ee = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            ee--;
        }
        x = sign | (ee << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

#endif
