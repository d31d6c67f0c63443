/* Preloaded into a node process by tests: shifts its wall clock (realtime
 * clocks, gettimeofday, time) by WALL_CLOCK_SHIFT_SECONDS while
 * its monotonic clocks stay true, as on a host whose clock is off. Reads
 * the kernel directly, so it allocates nothing and calls nothing that could
 * come back here. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long shift_seconds;

__attribute__((constructor)) static void read_shift(void) {
  const char* text = getenv("WALL_CLOCK_SHIFT_SECONDS");
  shift_seconds = text != NULL ? strtol(text, NULL, 10) : 0;
}

static int is_wall(clockid_t id) {
  return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t id, struct timespec* ts) {
  long rc = syscall(SYS_clock_gettime, id, ts);
  if (rc == 0 && is_wall(id))
    ts->tv_sec += shift_seconds;
  return (int)rc;
}

int gettimeofday(struct timeval* tv, void* tz) {
  struct timespec ts;
  (void)tz;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
    return -1;
  tv->tv_sec = ts.tv_sec;
  tv->tv_usec = ts.tv_nsec / 1000;
  return 0;
}

time_t time(time_t* out) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (out != NULL)
    *out = ts.tv_sec;
  return ts.tv_sec;
}
