/*
 * resp_mask.h - hide secrets in one complete Redis reply: the values of name/value pairs
 * such as CONFIG GET's ("requirepass" -> the password), in a RESP2 array of pairs or a
 * RESP3 map, at any depth from a chosen one down (an EXEC reply holds the replies of its
 * commands one level below its own array).
 *
 * Pure: no allocation, no I/O. Replies come from a server; they are still checked (every
 * length against the bytes there), and anything not exactly one well-formed value is
 * refused rather than copied half-masked.
 */
#ifndef SY_RESP_MASK_H
#define SY_RESP_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RESP_MASK_DEPTH 32   /* deeper replies are refused (CONFIG GET's is 1 deep) */

/*
 * Copy the reply in[0..len) to out[0..cap), replacing the value of every pair whose key (a
 * bulk or simple string, at an even index of an array or map min_depth or more levels
 * down; 0 is the reply itself) equals one of names (NULL-terminated, any letter case) by
 * the bulk string mask, where that value is a non-empty bulk or simple string. Returns
 * the bytes written, 0 when out is too small, -1 when in is not exactly one well-formed
 * value (or nests deeper than RESP_MASK_DEPTH). *masked counts the values replaced.
 */
ssize_t resp_mask_pairs(const uint8_t *in, size_t len, int min_depth, const char *const *names,
                        const char *mask, uint8_t *out, size_t cap, int *masked);

#endif
