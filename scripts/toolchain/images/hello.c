/* The workload image of the datacenter test hosts' real node (scripts/toolchain.sh node-images):
 * a static binary with no shell or libraries, so the image holds nothing but this file.
 * Prints one line naming where it runs (node and pod from the downward API), its arguments,
 * and the kernel's view of it (uid, hostname), then exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char host[256] = "?";
    const char *node = getenv("NODE_NAME"), *pod = getenv("POD_NAME");
    gethostname(host, sizeof host - 1);
    printf("hybridml-hello node=%s pod=%s hostname=%s uid=%d args=", node ? node : "?", pod ? pod : "?", host,
           (int)getuid());
    for (int i = 1; i < argc; i++) printf("%s%s", i > 1 ? "," : "", argv[i]);
    printf("\n");
    return 0;
}
