/**
 * A grouped horizontal bar chart as SVG, for the benchmark reports: per row, one bar per
 * series, each the series' value divided by the baseline series' value (so 1.0 = as fast).
 */
export function ratioChart(title: string, rows: string[], series: string[], value: (row: string, series: string) => number, baseline: string): string {
  const colors = ['#1f77b4', '#17becf', '#2ca02c', '#d62728', '#ff9896', '#7f7f7f'];
  const rowH = 18 * series.length + 16;
  const left = 270;
  const width = 900;
  const scaleW = width - left - 80;
  const ratios = rows.map((r) => series.map((s) => value(r, s) / value(r, baseline)));
  const max = Math.max(2, ...ratios.flat().filter(Number.isFinite));
  const height = 60 + rows.length * rowH + 20 * series.length;
  const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14">${esc(title)}</text>`,
  ];
  const x1 = left + scaleW / max;
  out.push(`<line x1="${x1}" y1="30" x2="${x1}" y2="${40 + rows.length * rowH}" stroke="#333" stroke-dasharray="4"/>`);
  rows.forEach((r, i) => {
    const y0 = 40 + i * rowH;
    out.push(`<text x="10" y="${y0 + rowH / 2}">${esc(r)}</text>`);
    series.forEach((_s, j) => {
      const v = ratios[i][j];
      if (!Number.isFinite(v)) return;
      const w = (scaleW * v) / max;
      out.push(`<rect x="${left}" y="${y0 + j * 18}" width="${w.toFixed(1)}" height="15" fill="${colors[j % colors.length]}"/>`);
      out.push(`<text x="${left + w + 4}" y="${y0 + j * 18 + 12}">${v.toFixed(2)}</text>`);
    });
  });
  series.forEach((s, j) => {
    const y = 50 + rows.length * rowH + j * 20;
    out.push(`<rect x="10" y="${y - 11}" width="14" height="14" fill="${colors[j % colors.length]}"/><text x="30" y="${y}">${esc(s)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
