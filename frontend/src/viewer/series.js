/**
 * The series browser beside the viewports: the series of the active viewport's study, with
 * thumbnails; a click shows the series in the active viewport.
 */
import { el } from '../labels.js';

/** The browser's aside (viewer.seriesHead, viewer.seriesList). */
export function seriesBrowser(viewer) {
  viewer.seriesHead = el('div', { class: 'mv-series-head' });
  viewer.seriesList = el('ul', { class: 'mv-series-list', dataset: { testid: 'series-browser' } });
  return el('aside', { class: 'mv-series', 'aria-label': viewer.t('seriesBrowser') }, viewer.seriesHead, viewer.seriesList);
}

export async function renderSeriesBrowser(viewer) {
  const panel = viewer.panels[viewer.activePanel];
  const study = panel.studyUid;
  const t = viewer.t;
  viewer.seriesHead.replaceChildren(
    el('strong', {}, viewer.layout === 2 ? t('viewportN', { n: viewer.activePanel + 1 }) : t('seriesBrowser')),
    el('span', { class: 'mv-muted' }, viewer.studyLabel(study)),
  );
  if (!study) {
    viewer.seriesList.replaceChildren();
    return;
  }
  let list;
  try {
    list = await viewer.web.listSeries(study);
  } catch (error) {
    viewer.seriesList.replaceChildren(el('li', { class: 'mv-muted' }, viewer.describeError(error)));
    return;
  }
  if (viewer.panels[viewer.activePanel].studyUid !== study) return;
  viewer.seriesList.replaceChildren(...list.map((series) => {
    const img = el('img', { alt: '', loading: 'lazy', decoding: 'async', width: 96, height: 96 });
    const missing = () => img.replaceWith(el('span', { class: 'mv-thumb-missing' }, series.modality));
    img.addEventListener('error', missing);
    viewer.web.thumbnailSrc(study, series.uid).then((src) => { img.src = src; }, missing);
    const current = panel.seriesUid === series.uid;
    return el('li', {},
      el('button', {
        type: 'button', class: 'mv-series-item', 'aria-current': current ? 'true' : 'false',
        dataset: { testid: 'series-item', series: series.uid },
        onclick: () => {
          if (viewer.activePanel === 0) viewer.userChangedView(0);
          viewer.loadSeries(viewer.activePanel, study, series.uid, 0);
        },
      },
      img,
      el('span', { class: 'mv-series-text' },
        el('span', {}, t('seriesLine', { number: series.number, modality: series.modality })),
        el('span', { class: 'mv-muted' }, series.description),
        el('span', { class: 'mv-muted' }, t('imageCount', { count: series.count }))),
      ));
  }));
}
