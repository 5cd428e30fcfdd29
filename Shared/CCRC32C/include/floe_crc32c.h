#ifndef FLOE_CRC32C_H
#define FLOE_CRC32C_H
#include <stddef.h>
#include <stdint.h>
/* CRC-32C (Castagnoli). `crc` is the running value (0 to start). */
uint32_t floe_crc32c(uint32_t crc, const void *data, size_t length);
#endif
