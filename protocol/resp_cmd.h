/*
 * resp_cmd.h - small helpers for the few Redis commands switchyard handles itself
 * (AUTH, HELLO ... AUTH, the setup commands it sends upstream): split one complete
 * command into argument slices, build a command, build an error reply.
 * Pure: no allocation, no I/O. Complements resp.h, which frames streams.
 */
#ifndef SY_RESP_CMD_H
#define SY_RESP_CMD_H

#include <stddef.h>
#include <stdint.h>

typedef struct resp_arg_s {
    const char *ptr;
    size_t      len;
} resp_arg_t;

/* Split one complete multibulk command held in buf[0..len) into at most max arguments
 * (pointers into buf). Returns argc, or -1 if buf is not exactly one well-formed
 * multibulk command or has more than max arguments. */
int resp_cmd_split(const uint8_t *buf, size_t len, resp_arg_t *argv, int max);

/* The same for the first part of a multibulk command still arriving (buf[0..len) holds
 * its start): the arguments complete in it, at most max. Returns how many, or -1 if what
 * is there is not the start of a well-formed multibulk command. *next_len is the declared
 * length of the argument after them when its "$<len>\r\n" header is complete, else -1;
 * *argc_out the command's declared argument count (-1 while its header is incomplete). */
int resp_cmd_split_head(const uint8_t *buf, size_t len, resp_arg_t *argv, int max,
                        long long *argc_out, long long *next_len);

/* Write "*argc\r\n$len\r\narg\r\n..." to out. Returns bytes written or 0 if it does not fit. */
size_t resp_cmd_build(uint8_t *out, size_t cap, int argc, const resp_arg_t *argv);

/* Write "-<msg>\r\n" (CR and LF in msg become spaces). Returns bytes or 0 if it does not fit. */
size_t resp_build_error(uint8_t *out, size_t cap, const char *msg);

#endif
