/*
 * resp_cmd.c - see resp_cmd.h. Lengths are parsed strictly (digits only, bounded by
 * the remaining input) before anything is trusted.
 */
#include <stdio.h>
#include <string.h>
#include "protocol/resp_cmd.h"

/* Parse "<digits>\r\n" at buf[*pos..len), value at most max. Returns 0 or -1. */
static int read_num(const uint8_t *buf, size_t len, size_t *pos, size_t max, size_t *out)
{
    size_t p = *pos, v = 0;
    int digits = 0;
    while (p < len && buf[p] >= '0' && buf[p] <= '9') {
        v = v * 10 + (size_t)(buf[p] - '0');
        if (v > max || ++digits > 10)
            return -1;
        p++;
    }
    if (digits == 0 || p + 1 >= len || buf[p] != '\r' || buf[p + 1] != '\n')
        return -1;
    *pos = p + 2;
    *out = v;
    return 0;
}

int resp_cmd_split(const uint8_t *buf, size_t len, resp_arg_t *argv, int max)
{
    size_t pos = 1, argc, i;
    if (len < 4 || buf[0] != '*' || read_num(buf, len, &pos, (size_t)max, &argc) != 0)
        return -1;
    for (i = 0; i < argc; i++) {
        size_t alen;
        if (pos >= len || buf[pos] != '$')
            return -1;
        pos++;
        if (read_num(buf, len, &pos, len, &alen) != 0 || alen > len - pos || len - pos - alen < 2)
            return -1;
        argv[i].ptr = (const char *)buf + pos;
        argv[i].len = alen;
        pos += alen;
        if (buf[pos] != '\r' || buf[pos + 1] != '\n')
            return -1;
        pos += 2;
    }
    return pos == len ? (int)argc : -1;
}

/* "<digits>\r\n" at buf[*pos..len): 1 and the value, 0 when it is not all there yet,
 * -1 when it is not a number (more than 18 digits included). */
static int head_num(const uint8_t *buf, size_t len, size_t *pos, long long *out)
{
    size_t p = *pos;
    long long v = 0;
    int digits = 0;
    while (p < len && buf[p] >= '0' && buf[p] <= '9') {
        if (++digits > 18)
            return -1;
        v = v * 10 + (buf[p] - '0');
        p++;
    }
    if (p + 1 >= len)
        return p < len && buf[p] != '\r' ? -1 : 0;
    if (digits == 0 || buf[p] != '\r' || buf[p + 1] != '\n')
        return -1;
    *pos = p + 2;
    *out = v;
    return 1;
}

int resp_cmd_split_head(const uint8_t *buf, size_t len, resp_arg_t *argv, int max,
                        long long *argc_out, long long *next_len)
{
    size_t pos = 1;
    long long argc, alen;
    int n = 0, r;

    *argc_out = -1;
    *next_len = -1;
    if (len == 0)
        return 0;
    if (buf[0] != '*')
        return -1;
    if ((r = head_num(buf, len, &pos, &argc)) <= 0)
        return r;
    *argc_out = argc;
    while (n < argc && n < max && pos < len) {
        if (buf[pos] != '$')
            return -1;
        size_t at = pos + 1;
        if ((r = head_num(buf, len, &at, &alen)) < 0)
            return -1;
        if (r == 0)
            break;
        if ((size_t)alen > len - at || len - at - (size_t)alen < 2) {
            *next_len = alen;   /* its body is still arriving */
            break;
        }
        if (buf[at + alen] != '\r' || buf[at + alen + 1] != '\n')
            return -1;
        argv[n].ptr = (const char *)buf + at;
        argv[n].len = (size_t)alen;
        n++;
        pos = at + (size_t)alen + 2;
    }
    return n;
}

size_t resp_cmd_build(uint8_t *out, size_t cap, int argc, const resp_arg_t *argv)
{
    size_t o = 0;
    int n = snprintf((char *)out, cap, "*%d\r\n", argc);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    o = (size_t)n;
    for (int i = 0; i < argc; i++) {
        n = snprintf((char *)out + o, cap - o, "$%zu\r\n", argv[i].len);
        if (n < 0 || (size_t)n >= cap - o || argv[i].len + 2 > cap - o - (size_t)n)
            return 0;
        o += (size_t)n;
        memcpy(out + o, argv[i].ptr, argv[i].len);
        o += argv[i].len;
        out[o++] = '\r';
        out[o++] = '\n';
    }
    return o;
}

size_t resp_build_error(uint8_t *out, size_t cap, const char *msg)
{
    size_t n = strlen(msg);
    if (n + 3 > cap)
        n = cap < 3 ? 0 : cap - 3;
    if (cap < 3)
        return 0;
    out[0] = '-';
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (msg[i] == '\r' || msg[i] == '\n') ? ' ' : (uint8_t)msg[i];
    out[1 + n] = '\r';
    out[2 + n] = '\n';
    return n + 3;
}
