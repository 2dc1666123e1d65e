/* metrics.c - placeholder until the metrics endpoint lands (see metrics.h). */
#include "proxy/sy.h"
#include "proxy/metrics.h"

int sy_metrics_start(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return 0;
}

void sy_metrics_stop(void)
{
}
