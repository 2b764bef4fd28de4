/* Decoding only the part of a JPEG that a crop needs: libjpeg-turbo's jpeg_crop_scanline (the columns) and
 * jpeg_skip_scanlines (the rows above; the rows below are never decoded), at 1/denom scale in the DCT domain.
 * libjpeg's default settings (accurate integer IDCT, fancy upsampling), as torchvision.io.decode_jpeg uses: the pixels
 * of a region equal the full decode's there when the region has a margin of a few columns (src/data/crops.py).
 * Loaded with ctypes (src/data/crops.py); built by `pip install` as the extension src.data._jpeg_roi (pyproject.toml).
 * Errors never exit: libjpeg's error handler jumps back, and the message is copied to `message`. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

#define ROWS 16 /* rows read per call */

struct error_mgr {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char *message;
  int message_len;
};

static void on_error(j_common_ptr cinfo) {
  struct error_mgr *err = (struct error_mgr *)cinfo->err;
  char buffer[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, buffer);
  snprintf(err->message, err->message_len, "%s", buffer);
  longjmp(err->jump, 1);
}

/* to[i] = from[n - 1 - i]: a row of BGR pixels mirrored into RGB ones, 8 bytes at a time (a mirror copying pixel
 * by pixel took 0.08 ms more per 500 x 375 image than no mirror; this one 0.025). */
static void reverse_bytes(unsigned char *to, const unsigned char *from, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned long long v;
    memcpy(&v, from + n - i - 8, 8);
    v = __builtin_bswap64(v);
    memcpy(to + i, &v, 8);
  }
  for (; i < n; i++)
    to[i] = from[n - 1 - i];
}

static void on_message(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; } /* warnings: decode on */

/* The calling convention's version: src/data/crops.py loads a build only if it says the one it expects. */
int jpeg_roi_version(void) { return 2; }

/* Rows [top, top + height) and columns [left, left + width) of the image decoded at 1/denom scale, RGB, into `out`
 * (height x width x 3 bytes), mirrored left to right if `flip`; 0, or -1 with `message`. The columns decoded reach
 * `margin` further on each side (within the image): the upsampling of the chroma treats the first and last decoded
 * column as the image's edge. */
int jpeg_roi_decode(const unsigned char *data, unsigned long size, int denom, int top, int left, int height,
                    int width, int margin, int flip, unsigned char *out, char *message, int message_len) {
  struct jpeg_decompress_struct cinfo;
  struct error_mgr err;
  unsigned char *volatile row = NULL;
  JDIMENSION x, w;
  int y;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  err.message = message;
  err.message_len = message_len;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(row);
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = denom;
  /* mirrored: decoded as BGR, each row then byte-reversed (RGB pixels in the mirrored order) */
  cinfo.out_color_space = flip ? JCS_EXT_BGR : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (top < 0 || left < 0 || height <= 0 || width <= 0 || top + height > (int)cinfo.output_height ||
      left + width > (int)cinfo.output_width) {
    snprintf(message, message_len, "region of %dx%d px at (%d, %d) outside the %ux%u px image", height, width,
             top, left, cinfo.output_height, cinfo.output_width);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  x = (JDIMENSION)(left > margin ? left - margin : 0);
  w = (JDIMENSION)(left + width + margin < (int)cinfo.output_width ? left + width + margin : (int)cinfo.output_width) - x;
  if (w < cinfo.output_width)
    jpeg_crop_scanline(&cinfo, &x, &w); /* x moves left to an iMCU boundary, w grows to match */
  else
    x = 0;
  row = malloc((size_t)w * 3 * ROWS);
  if (row == NULL) {
    snprintf(message, message_len, "out of memory");
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  if (top > 0)
    jpeg_skip_scanlines(&cinfo, (JDIMENSION)top);
  for (y = 0; y < height;) { /* several rows per call: libjpeg hands out a row group at a time */
    JSAMPROW rows[ROWS];
    int k, n, want = height - y < ROWS ? height - y : ROWS;
    for (k = 0; k < want; k++)
      rows[k] = row + (size_t)k * w * 3;
    n = (int)jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)want);
    if (n <= 0) {
      snprintf(message, message_len, "no scanline %d", top + y);
      jpeg_destroy_decompress(&cinfo);
      free(row);
      return -1;
    }
    for (k = 0; k < n; k++, y++) {
      const unsigned char *from = rows[k] + (size_t)(left - (int)x) * 3;
      unsigned char *to = out + (size_t)y * width * 3;
      if (!flip)
        memcpy(to, from, (size_t)width * 3);
      else
        reverse_bytes(to, from, (size_t)width * 3);
    }
  }
  free(row);
  jpeg_abort_decompress(&cinfo); /* the rows below the region are never decoded */
  jpeg_destroy_decompress(&cinfo);
  return 0;
}
