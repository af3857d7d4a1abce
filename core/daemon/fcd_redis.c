/*
 * fcd's Redis connection and the scripts it runs there.
 *
 * hiredis's synchronous API, with a timeout on the connect and on every
 * command: a Redis that hangs costs the loop FCD_REDIS_TIMEOUT_MS, never
 * more.  A command that got no answer closes the connection, since a
 * late reply would otherwise be read as the answer to the next command.
 *
 * A script is sent by its SHA1 (EVALSHA), computed here from the file's
 * text.  A Redis that does not know it yet (restarted, flushed, or the
 * file changed since) answers NOSCRIPT, and the text follows with EVAL,
 * which also makes Redis remember it for the next EVALSHA.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fcd.h"


static redisReply *fcd_redis_command(fcd_t *fcd, int argc,
    const char **argv, const size_t *lens, char *err, size_t errlen);
static void fcd_redis_where(const fcd_conf_t *conf, char *buf,
    size_t size);


int
fcd_redis_script_load(const char *path, fcd_script_t *script, char *err,
    size_t errlen)
{
    int            fd;
    char          *text;
    size_t         len;
    ssize_t        n;
    unsigned int   i, mdlen;
    struct stat    st;
    unsigned char  md[EVP_MAX_MD_SIZE];

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        snprintf(err, errlen, "cannot open \"%s\": %s", path,
                 strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size == 0
        || st.st_size > FCD_SCRIPT_MAX)
    {
        close(fd);
        snprintf(err, errlen, "\"%s\" is not a file of 1 to %d bytes", path,
                 FCD_SCRIPT_MAX);
        return -1;
    }

    text = malloc((size_t) st.st_size + 1);

    if (text == NULL) {
        close(fd);
        snprintf(err, errlen, "reading \"%s\": out of memory", path);
        return -1;
    }

    len = 0;

    while (len < (size_t) st.st_size) {
        n = read(fd, text + len, (size_t) st.st_size - len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            break;
        }

        len += (size_t) n;
    }

    close(fd);

    /* a short read is a file changing under us: better to try again */
    if (len != (size_t) st.st_size) {
        free(text);
        snprintf(err, errlen, "cannot read \"%s\": %s", path,
                 n == -1 ? strerror(errno) : "the file changed size");
        return -1;
    }

    text[len] = '\0';

    if (EVP_Digest(text, len, md, &mdlen, EVP_sha1(), NULL) != 1
        || mdlen != 20)
    {
        free(text);
        snprintf(err, errlen, "computing the SHA1 of \"%s\" failed", path);
        return -1;
    }

    free(script->text);
    script->text = text;
    script->len = len;

    for (i = 0; i < mdlen; i++) {
        snprintf(script->sha1 + 2 * i, 3, "%02x", md[i]);
    }

    return 0;
}


void
fcd_redis_script_free(fcd_script_t *script)
{
    free(script->text);
    script->text = NULL;
    script->len = 0;
    script->sha1[0] = '\0';
}


int
fcd_redis_connect(fcd_t *fcd, char *err, size_t errlen)
{
    char             where[FCD_HOST_LEN + 16];
    const char      *argv[2];
    size_t           lens[2];
    redisReply      *r;
    redisContext    *c;
    struct timeval   tv;

    fcd_redis_close(fcd);
    fcd_redis_where(&fcd->conf, where, sizeof(where));

    tv.tv_sec = FCD_REDIS_TIMEOUT_MS / 1000;
    tv.tv_usec = (FCD_REDIS_TIMEOUT_MS % 1000) * 1000;

    if (fcd->conf.redis_host_is_addr) {
        c = redisConnectWithTimeout(fcd->conf.redis_host,
                                    fcd->conf.redis_port, tv);

    } else {
        c = redisConnectUnixWithTimeout(fcd->conf.redis_host, tv);
    }

    if (c == NULL || c->err) {
        snprintf(err, errlen, "connect to %s: %s", where,
                 c ? c->errstr : "out of memory");

        if (c != NULL) {
            redisFree(c);
        }

        return -1;
    }

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, errlen, "connect to %s: cannot set the timeout: %s",
                 where, strerror(errno));
        redisFree(c);
        return -1;
    }

    fcd->redis = c;

    if (fcd->conf.redis_password[0] != '\0') {
        argv[0] = "AUTH";
        lens[0] = 4;
        argv[1] = fcd->conf.redis_password;
        lens[1] = strlen(fcd->conf.redis_password);

        r = fcd_redis_command(fcd, 2, argv, lens, err, errlen);

        if (r == NULL) {
            return -1;
        }

        if (r->type == REDIS_REPLY_ERROR) {
            /* the reply names no password, so it may be quoted */
            snprintf(err, errlen, "%s refused the password from %s: %.200s",
                     where, fcd->conf.redis_password_file, r->str);
            freeReplyObject(r);
            fcd_redis_close(fcd);
            return -1;
        }

        freeReplyObject(r);
    }

    fc_log(FC_LOG_INFO, "connected to %s", where);

    return 0;
}


void
fcd_redis_close(fcd_t *fcd)
{
    if (fcd->redis != NULL) {
        redisFree(fcd->redis);
        fcd->redis = NULL;
    }
}


int
fcd_redis_release(fcd_t *fcd, const fcd_hold_t *hold, char *err,
    size_t errlen)
{
    int          rc;
    char         key[32];
    const char  *argv[5];
    size_t       lens[5];
    redisReply  *r;

    snprintf(key, sizeof(key), "{c:%lld}:ctr", (long long) hold->contract_id);

    argv[0] = "EVALSHA";
    argv[1] = fcd->release.sha1;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = hold->auth_id;

    lens[0] = 7;
    lens[1] = strlen(fcd->release.sha1);
    lens[2] = 1;
    lens[3] = strlen(key);
    lens[4] = strlen(hold->auth_id);

    r = fcd_redis_command(fcd, 5, argv, lens, err, errlen);

    if (r == NULL) {
        return FCD_REDIS_DOWN;
    }

    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);

        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = fcd->release.text;
        lens[1] = fcd->release.len;

        r = fcd_redis_command(fcd, 5, argv, lens, err, errlen);

        if (r == NULL) {
            return FCD_REDIS_DOWN;
        }
    }

    rc = FCD_REDIS_OK;

    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "release.lua failed: %.300s", r->str);
        rc = FCD_REDIS_REFUSED;

    } else if (r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "release.lua answered a reply of type %d, "
                 "not a number", r->type);
        rc = FCD_REDIS_REFUSED;
    }

    freeReplyObject(r);

    return rc;
}


/*
 * Sends one command and reads its reply.  NULL means no reply: the
 * reason is in err and the connection is closed.
 */

static redisReply *
fcd_redis_command(fcd_t *fcd, int argc, const char **argv,
    const size_t *lens, char *err, size_t errlen)
{
    char         where[FCD_HOST_LEN + 16];
    redisReply  *r;

    r = redisCommandArgv(fcd->redis, argc, argv, lens);

    if (r == NULL) {
        fcd_redis_where(&fcd->conf, where, sizeof(where));
        snprintf(err, errlen, "%s on %s: %s", argv[0], where,
                 fcd->redis->err ? fcd->redis->errstr : "no reply");
        fcd_redis_close(fcd);
    }

    return r;
}


static void
fcd_redis_where(const fcd_conf_t *conf, char *buf, size_t size)
{
    if (conf->redis_host_is_addr) {
        snprintf(buf, size, "redis at %s port %d", conf->redis_host,
                 conf->redis_port);

    } else {
        snprintf(buf, size, "redis at %s", conf->redis_host);
    }
}
