/*
 * fault_inject.c - an LD_PRELOAD library for the tests: makes the resource failures a
 * daemon must survive happen on demand.
 *
 *   SY_FAULT_POLL_FILE=/path   while /path exists, ioctl(FIONBIO) fails with ENOMEM. libuv's
 *                              uv_poll_init sets O_NONBLOCK that way, so every new poll
 *                              handle fails to start, as when memory or fds run out; the
 *                              sockets switchyard and libpq create are non-blocking from
 *                              the start and are not touched.
 *
 * Built without sanitizers (make builds it beside the tools); an ASan daemon runs it with
 * ASAN_OPTIONS=verify_asan_link_order=0, and its ioctl interceptor is what RTLD_NEXT finds.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

typedef int (*ioctl_fn)(int, unsigned long, ...);

int ioctl(int fd, unsigned long req, ...)
{
    static ioctl_fn real;
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (real == NULL)
        real = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
    if (req == FIONBIO) {
        const char *f = getenv("SY_FAULT_POLL_FILE");
        if (f != NULL && access(f, F_OK) == 0) {
            errno = ENOMEM;
            return -1;
        }
    }
    return real(fd, req, arg);
}
