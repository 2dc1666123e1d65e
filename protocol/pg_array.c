/*
 * pg_array.c - see pg_array.h. One pass over the bytes:
 *
 *   '{'  then  '}'                                   empty array
 *        or    number (',' number)* '}'              then the end of the input
 *
 * A number is one or more ASCII digits; its value is checked against UINT32_MAX before
 * each multiply-add, so no input can wrap it.
 */
#include "protocol/pg_array.h"

static ssize_t oid_fail(const char **err, const char *msg)
{
    *err = msg;
    return PGW_ERR;
}

ssize_t pgw_parse_oid_array(const char *text, size_t len, uint32_t *out, size_t max, const char **err)
{
    size_t pos = 0, n = 0;

    *err = NULL;
    if (len == 0 || text[0] != '{')
        return oid_fail(err, "expected '{'");
    pos = 1;
    if (pos < len && text[pos] == '}') {
        pos++;
    } else {
        for (;;) {
            uint32_t v = 0;
            size_t digits = 0;

            while (pos < len && text[pos] >= '0' && text[pos] <= '9') {
                uint32_t d = (uint32_t)(text[pos] - '0');
                if (v > (UINT32_MAX - d) / 10)
                    return oid_fail(err, "OID out of range");
                v = v * 10 + d;
                pos++;
                digits++;
            }
            if (digits == 0)
                return oid_fail(err, "expected a digit");
            if (n == max)
                return oid_fail(err, "too many elements");
            if (out != NULL)
                out[n] = v;
            n++;
            if (pos < len && text[pos] == ',') {
                pos++;
                continue;
            }
            if (pos < len && text[pos] == '}') {
                pos++;
                break;
            }
            return oid_fail(err, "expected ',' or '}'");
        }
    }
    if (pos != len)
        return oid_fail(err, "bytes after '}'");
    return (ssize_t)n;
}
