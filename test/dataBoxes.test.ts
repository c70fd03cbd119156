import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { classBoxes, evalGeometry, loadLocCsv, loadXmlBoxes, mapBox, mapBoxes, parseVocXml, roundHalfEven, valGeometry } from '../src/data/boxes.js';
import { decodeTransform } from '../src/data/decode.js';
import { loadMnist } from '../src/data/mnist.js';
import { Problems, type PixelBox } from '../src/data/samples.js';

function close(actual: PixelBox | null, expected: PixelBox | null, tol = 1e-4): void {
  if (expected === null || actual === null) {
    assert.deepEqual(actual, expected);
    return;
  }
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) < tol, `${actual} vs ${expected}`);
}

const xml = (w: number, h: number, objs: [string, number, number, number, number][]) => `<annotation>
  <folder>val</folder>
  <filename>ILSVRC2012_val_00000001</filename>
  <source><database>ILSVRC_2012</database></source>
  <size>
    <width>${w}</width>
    <height>${h}</height>
    <depth>3</depth>
  </size>
  <segmented>0</segmented>
${objs
  .map(
    ([n, a, b, c, d]) => `  <object>
    <name>${n}</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <bndbox>
      <xmin>${a}</xmin>
      <ymin>${b}</ymin>
      <xmax>${c}</xmax>
      <ymax>${d}</ymax>
    </bndbox>
  </object>`,
  )
  .join('\n')}
</annotation>
`;

test('boxes: VOC XML and LOC_val_solution.csv parsed; only the image class counts; a missing class is reported', () => {
  const dir = mkdtempSync(join(tmpdir(), 'casm-boxes-'));
  try {
    writeFileSync(
      join(dir, 'ILSVRC2012_val_00000001.xml'),
      xml(500, 375, [
        ['n01751748', 100, 50, 300, 200],
        ['n09193705', 0, 0, 499, 374],
        ['n01751748', 400, 300, 499, 374],
      ]),
    );
    writeFileSync(join(dir, 'ILSVRC2012_val_00000002.xml'), xml(375, 500, [['n02105855', 10, 100, 200, 400]]));
    writeFileSync(join(dir, 'ILSVRC2012_val_00000003.xml'), '<html>not an annotation</html>');
    const problems = new Problems();
    const anns = loadXmlBoxes(dir, problems);
    assert.deepEqual([...anns.keys()], ['ILSVRC2012_val_00000001', 'ILSVRC2012_val_00000002']);
    assert.deepEqual(
      problems.list.map((p) => [p.kind, p.file.endsWith('00000003.xml')]),
      [['bad-annotation', true]],
    );
    const a1 = anns.get('ILSVRC2012_val_00000001')!;
    assert.deepEqual([a1.width, a1.height], [500, 375]);
    assert.deepEqual(classBoxes(a1, 'n01751748', problems), [
      [100, 50, 300, 200],
      [400, 300, 499, 374],
    ]);
    // image 2's class is n01440764 but its XML only has n02105855: [] and a warning, no crash
    const p2 = new Problems();
    assert.deepEqual(classBoxes(anns.get('ILSVRC2012_val_00000002')!, 'n01440764', p2), []);
    assert.equal(p2.count, 1);
    assert.equal(p2.list[0]!.kind, 'no-class-box');
    assert.match(p2.list[0]!.message, /ILSVRC2012_val_00000002: no box of its class n01440764 \(objects: n02105855\)/);
    assert.throws(() => parseVocXml('<annotation><object><name>n1</name></object></annotation>', 'x.xml'), /x\.xml: <object> without/);

    const header = 'ImageId,PredictionString\n';
    const l1 = 'ILSVRC2012_val_00000001,n01751748 100 50 300 200 n09193705 0 0 499 374 n01751748 400 300 499 374 \n';
    const l2 = 'ILSVRC2012_val_00000002,n02105855 10 100 200\n';
    const l3 = 'ILSVRC2012_val_00000003,n02105855 10 100 200 300\r\n';
    writeFileSync(join(dir, 'LOC_val_solution.csv'), header + l1 + l2 + l3);
    const pc = new Problems();
    const csv = loadLocCsv(join(dir, 'LOC_val_solution.csv'), pc);
    assert.deepEqual([...csv.keys()], ['ILSVRC2012_val_00000001', 'ILSVRC2012_val_00000003']);
    assert.deepEqual(classBoxes(csv.get('ILSVRC2012_val_00000001')!, 'n01751748'), classBoxes(a1, 'n01751748'));
    assert.deepEqual(csv.get('ILSVRC2012_val_00000003')!.objects, [{ synset: 'n02105855', box: [10, 100, 200, 300] }]);
    assert.deepEqual(
      pc.list.map((p) => [p.kind, p.offset]),
      [['bad-annotation', header.length + l1.length]],
    );
    assert.match(pc.list[0]!.message, /line 3: 4 tokens/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('boxes: crop mapping, hand-computed (short side 224 + centre crop, stretch, Resize(256)+CenterCrop(224))', () => {
  // 500 x 375, short side 224: resized 298 x 224 (int(224 * 500 / 375) = int(298.67)), crop left
  // round(74 / 2) = 37; sx = 298 / 500 = 0.596, sy = 224 / 375
  const g = evalGeometry(500, 375);
  assert.deepEqual(g, { kind: 'resize-crop', srcW: 500, srcH: 375, resizeW: 298, resizeH: 224, left: 37, top: 0, outW: 224, outH: 224, flip: false });
  const sy = 224 / 375;
  close(mapBox([100, 50, 300, 200], g), [100 * 0.596 - 37, 50 * sy, 300 * 0.596 - 37, 200 * sy]); // [22.6, 29.867, 141.8, 119.467]
  close(mapBox([100, 50, 300, 200], g), [22.6, 29.86667, 141.8, 119.46667]);
  close(mapBox([400, 300, 499, 374], g), [201.4, 179.2, 224, 223.40267]); // clipped on the right
  assert.equal(mapBox([0, 0, 50, 375], g), null); // x1 = 29.8 - 37 < 0: entirely left of the crop
  assert.equal(mapBox([450, 10, 500, 100], g), null); // x0 = 268.2 - 37 = 231.2 > 224: right of it
  close(mapBox([-10, -10, 600, 400], g), [0, 0, 224, 224]);
  assert.deepEqual(
    mapBoxes(
      [
        [0, 0, 50, 375],
        [100, 50, 300, 200],
      ],
      g,
    ).length,
    1,
  );

  // stretch to 224 x 224: sx = 0.448, sy = 224 / 375
  close(mapBox([100, 50, 300, 200], evalGeometry(500, 375, 'stretch')), [44.8, 29.86667, 134.4, 119.46667]);

  // portrait 375 x 500, Resize(256): 256 x 341 (int(256 * 500 / 375) = int(341.33)); CenterCrop(224):
  // left round(16) = 16, top round(58.5) = 58 (half to even, as Python's round)
  const v = valGeometry(375, 500);
  assert.deepEqual([v.kind, (v as { resizeW: number }).resizeW, (v as { resizeH: number }).resizeH, v.left, v.top], ['resize-crop', 256, 341, 16, 58]);
  close(mapBox([10, 100, 200, 400], v), [0, 10.2, 120.53333, 214.8]); // x0 = 6.83 - 16 < 0 -> 0
  assert.deepEqual([roundHalfEven(58.5), roundHalfEven(59.5), roundHalfEven(2.5), roundHalfEven(3.2)], [58, 60, 2, 3]);

  // a flipped crop-resize (the train transform): window (100, 50, 200 x 100) -> 50 x 50, mirrored
  close(
    mapBox([150, 75, 250, 125], { kind: 'crop-resize', srcW: 400, srcH: 300, left: 100, top: 50, cropW: 200, cropH: 100, outW: 50, outH: 50, flip: true }),
    [50 - 37.5, 12.5, 50 - 12.5, 37.5],
  );
});

test('boxes: mapped boxes land on the pixels (a digit drawn at a known box, decoded through the eval crop)', async () => {
  // a 300 x 200 black image with an MNIST digit's bright box filled in at [180, 40, 260, 160)
  const W = 300;
  const H = 200;
  const rgb = Buffer.alloc(W * H * 3);
  const m = loadMnist('test');
  const box: PixelBox = [180, 40, 260, 160];
  for (let y = box[1]; y < box[3]; y++) {
    for (let x = box[0]; x < box[2]; x++) {
      // digit texture, floored at 200 so the whole box is bright
      const v = Math.max(200, m.images[Math.floor(((y - box[1]) * 28) / 120) * 28 + Math.floor(((x - box[0]) * 28) / 80)]!);
      rgb.fill(v, 3 * (y * W + x), 3 * (y * W + x) + 3);
    }
  }
  const png = await sharp(rgb, { raw: { width: W, height: H, channels: 3 } })
    .png()
    .toBuffer();
  for (const spec of [{ kind: 'eval' as const }, { kind: 'eval' as const, mode: 'stretch' as const }, { kind: 'val' as const }]) {
    const out = await decodeTransform(png, spec, { boxes: [box, [0, 0, 20, 20]] });
    // the second box is left of the crop for short-side / val (crop left 56 / 80), inside for stretch
    const mapped = out.boxes![0]!;
    // tight box of the bright pixels (> 127) of the output
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -1;
    let y1 = -1;
    for (let y = 0; y < out.height; y++) {
      for (let x = 0; x < out.width; x++) {
        if (out.data[3 * (y * out.width + x)]! > 127) {
          x0 = Math.min(x0, x);
          y0 = Math.min(y0, y);
          x1 = Math.max(x1, x + 1);
          y1 = Math.max(y1, y + 1);
        }
      }
    }
    for (const [a, b] of [
      [x0, mapped[0]],
      [y0, mapped[1]],
      [x1, mapped[2]],
      [y1, mapped[3]],
    ] as const) {
      assert.ok(Math.abs(a - b) <= 1, `${JSON.stringify(spec)}: bright box ${[x0, y0, x1, y1]} vs mapped ${mapped}`);
    }
    assert.equal(out.boxes!.length, spec.kind === 'eval' && spec.mode === 'stretch' ? 2 : 1, JSON.stringify(spec));
  }
});
