/*
 * crc32c: the Castagnoli CRC (iSCSI, ext4, SCTP; polynomial 0x1EDC6F41,
 * reflected 0x82F63B78) that checksums every record ravel writes to disk.
 *
 * Why Castagnoli rather than zlib's CRC-32: better error detection on the
 * short records a queue writes, and x86-64 computes it in hardware (SSE4.2
 * crc32 instruction), so checksumming costs almost nothing next to the
 * write itself.  Without SSE4.2 a table-driven slice-by-8 loop is used; both
 * give the same values.
 *
 * Chaining works like zlib's crc32(): rv_crc32c(rv_crc32c(0, a), b) is the
 * checksum of a followed by b.  rv_crc32c(0, "123456789", 9) == 0xE3069283.
 */
#ifndef RAVEL_STORAGE_CRC32C_H
#define RAVEL_STORAGE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Extend crc (0 to start) over len bytes at data. */
uint32_t rv_crc32c(uint32_t crc, const void *data, size_t len);
/* The portable table-driven path, whatever the CPU (for tests that compare the two). */
uint32_t rv_crc32c_sw(uint32_t crc, const void *data, size_t len);
/* Whether rv_crc32c uses the CPU's crc32 instruction. */
int rv_crc32c_hw_available(void);

#ifdef __cplusplus
}
#endif
#endif
