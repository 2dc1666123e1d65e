/*
 * fault_inject.c - an LD_PRELOAD library for the tests: makes the resource failures a
 * daemon must survive happen on demand.
 *
 *   SY_FAULT_POLL_FILE=/path   while /path exists, ioctl(FIONBIO) fails with ENOMEM. libuv's
 *                              uv_poll_init sets O_NONBLOCK that way, so every new poll
 *                              handle fails to start, as when memory or fds run out; the
 *                              sockets switchyard and libpq create are non-blocking from
 *                              the start and are not touched.
 *   SY_FAULT_TIMERFD=1         timerfd_create fails with EMFILE, as when fds run out: the
 *                              workers' sweep must fall back to a uv timer.
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
#include <sys/timerfd.h>
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

typedef int (*timerfd_create_fn)(int, int);

int timerfd_create(int clockid, int flags)
{
    static timerfd_create_fn real;
    if (real == NULL)
        real = (timerfd_create_fn)dlsym(RTLD_NEXT, "timerfd_create");
    const char *f = getenv("SY_FAULT_TIMERFD");
    if (f != NULL && f[0] == '1') {
        errno = EMFILE;
        return -1;
    }
    return real(clockid, flags);
}
