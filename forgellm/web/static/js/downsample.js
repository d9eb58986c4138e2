// Display downsampling for long curves: min-max per bucket, so every extreme (the best loss
// among them) survives, and the first and last points are always kept. Points are {x, y}.

export function downsample(points, maxPoints) {
  if (points.length <= maxPoints) return points;
  const buckets = Math.max(1, Math.floor((maxPoints - 2) / 2));
  const inner = points.length - 2;
  const out = [points[0]];
  for (let b = 0; b < buckets; b++) {
    const lo = 1 + Math.floor((b * inner) / buckets);
    const hi = 1 + Math.floor(((b + 1) * inner) / buckets);
    if (hi <= lo) continue;
    let min = lo, max = lo;
    for (let i = lo + 1; i < hi; i++) {
      if (points[i].y < points[min].y) min = i;
      if (points[i].y > points[max].y) max = i;
    }
    if (min < max) out.push(points[min], points[max]);
    else if (max < min) out.push(points[max], points[min]);
    else out.push(points[min]);
  }
  out.push(points[points.length - 1]);
  return out;
}
