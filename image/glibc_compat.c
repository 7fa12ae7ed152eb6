/* Linked into the image's interpreter (image/debian.py, link_interpreter) so that the runtime
 * `cloud-cni install-shim` copies to nodes runs on glibc 2.34 (Amazon Linux 2023), not only on the
 * glibc 2.36 it was built with. Two symbols would otherwise raise the floor:
 *
 * - arc4random_buf (GLIBC_2.36): the static libexpat salts its hash tables with it. This one reads
 *   getrandom(2) (GLIBC_2.25), which is where glibc's own arc4random_buf gets its bytes.
 * - hypot (GLIBC_2.35): glibc 2.35 gave hypot a new version when it dropped the SVID error-handling
 *   wrapper (_LIB_VERSION, which nothing sets since glibc 2.27). The result is the same; this calls
 *   the GLIBC_2.2.5 version, present in every glibc.
 *
 * Both are hidden: the link binds libpython's and libexpat's calls to them, and the executable does not
 * export them, so the loader binds hypot@GLIBC_2.2.5 to libm, not back to this hypot.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/types.h>

__attribute__((visibility("hidden"))) void arc4random_buf(void *buffer, size_t size)
{
    unsigned char *at = buffer;
    while (size > 0) {
        ssize_t got = getrandom(at, size, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* as glibc's arc4random_buf does when the kernel gives no randomness */
        }
        at += got;
        size -= (size_t)got;
    }
}

double hypot_glibc_2_2_5(double x, double y);
__asm__(".symver hypot_glibc_2_2_5, hypot@GLIBC_2.2.5");

__attribute__((visibility("hidden"))) double hypot(double x, double y)
{
    return hypot_glibc_2_2_5(x, y);
}
