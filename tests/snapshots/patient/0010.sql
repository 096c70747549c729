BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
CREATE OR REPLACE FUNCTION identity_key(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
    n text;
BEGIN
    IF octet_length(value) = length(value) THEN  -- ASCII: NFKC changes nothing, folding is lower()
        n := btrim(lower(value COLLATE "C"), E' \t\n\u000b\u000c\r');
        IF n ~ '[\t-\r]|  ' THEN
            n := regexp_replace(n, '[\t-\r ]+', ' ', 'g');
        END IF;
        RETURN n;
    END IF;
    n := lower(normalize(value, NFKC) COLLATE "C");  -- A-Z here, the rest below
    IF n ~ '[ßİǰΐΰẖẗẘẙẞὐὒὔὖᾀᾁᾂᾃᾄᾅᾆᾇᾈᾉᾊᾋᾌᾍᾎᾏᾐᾑᾒᾓᾔᾕᾖᾗᾘᾙᾚᾛᾜᾝᾞᾟᾠᾡᾢᾣᾤᾥᾦᾧᾨᾩᾪᾫᾬᾭᾮᾯᾲᾳᾴᾶᾷᾼῂῃῄῆῇῌῒῖῗῢῤῦῧῲῳῴῶῷῼ]' THEN  -- the characters that fold to several
        n := replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(n, 'ß', 'ss'), 'İ', 'i̇'), 'ǰ', 'ǰ'), 'ΐ', 'ΐ'), 'ΰ', 'ΰ'), 'ẖ', 'ẖ'), 'ẗ', 'ẗ'), 'ẘ', 'ẘ'), 'ẙ', 'ẙ'), 'ẞ', 'ss'), 'ὐ', 'ὐ'), 'ὒ', 'ὒ'), 'ὔ', 'ὔ'), 'ὖ', 'ὖ'), 'ᾀ', 'ἀι'), 'ᾁ', 'ἁι'), 'ᾂ', 'ἂι'), 'ᾃ', 'ἃι'), 'ᾄ', 'ἄι'), 'ᾅ', 'ἅι'), 'ᾆ', 'ἆι'), 'ᾇ', 'ἇι'), 'ᾈ', 'ἀι'), 'ᾉ', 'ἁι'), 'ᾊ', 'ἂι'), 'ᾋ', 'ἃι'), 'ᾌ', 'ἄι'), 'ᾍ', 'ἅι'), 'ᾎ', 'ἆι'), 'ᾏ', 'ἇι'), 'ᾐ', 'ἠι'), 'ᾑ', 'ἡι'), 'ᾒ', 'ἢι'), 'ᾓ', 'ἣι'), 'ᾔ', 'ἤι'), 'ᾕ', 'ἥι'), 'ᾖ', 'ἦι'), 'ᾗ', 'ἧι'), 'ᾘ', 'ἠι'), 'ᾙ', 'ἡι'), 'ᾚ', 'ἢι'), 'ᾛ', 'ἣι'), 'ᾜ', 'ἤι'), 'ᾝ', 'ἥι'), 'ᾞ', 'ἦι'), 'ᾟ', 'ἧι'), 'ᾠ', 'ὠι'), 'ᾡ', 'ὡι'), 'ᾢ', 'ὢι'), 'ᾣ', 'ὣι'), 'ᾤ', 'ὤι'), 'ᾥ', 'ὥι'), 'ᾦ', 'ὦι'), 'ᾧ', 'ὧι'), 'ᾨ', 'ὠι'), 'ᾩ', 'ὡι'), 'ᾪ', 'ὢι'), 'ᾫ', 'ὣι'), 'ᾬ', 'ὤι'), 'ᾭ', 'ὥι'), 'ᾮ', 'ὦι'), 'ᾯ', 'ὧι'), 'ᾲ', 'ὰι'), 'ᾳ', 'αι'), 'ᾴ', 'άι'), 'ᾶ', 'ᾶ'), 'ᾷ', 'ᾶι'), 'ᾼ', 'αι'), 'ῂ', 'ὴι'), 'ῃ', 'ηι'), 'ῄ', 'ήι'), 'ῆ', 'ῆ'), 'ῇ', 'ῆι'), 'ῌ', 'ηι'), 'ῒ', 'ῒ'), 'ῖ', 'ῖ'), 'ῗ', 'ῗ'), 'ῢ', 'ῢ'), 'ῤ', 'ῤ'), 'ῦ', 'ῦ'), 'ῧ', 'ῧ'), 'ῲ', 'ὼι'), 'ῳ', 'ωι'), 'ῴ', 'ώι'), 'ῶ', 'ῶ'), 'ῷ', 'ῶι'), 'ῼ', 'ωι');
    END IF;
    IF n ~ '[ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ]' THEN
        n := translate(n, 'ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ',
                          'àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþ');
    END IF;
    IF n ~ '[ĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮĴĶĹĻĽŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽƁƂƄƆƇƉƊƋƎƏƐƑƓƔƖƗƘƜƝƟƠƢƤƦƧƩƬƮƯƱƲƳƵƷƸƼǍǏǑǓǕǗǙǛǞǠǢǤǦǨǪǬǮǴǶǷǸǺǼǾȀȂȄȆȈȊȌȎȐȒȔȖȘȚȜȞȠȢȤȦȨȪȬȮȰȲȺȻȽȾɁɃɄɅɆɈɊɌɎ]' THEN
        n := translate(n, 'ĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮĴĶĹĻĽŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽƁƂƄƆƇƉƊƋƎƏƐƑƓƔƖƗƘƜƝƟƠƢƤƦƧƩƬƮƯƱƲƳƵƷƸƼǍǏǑǓǕǗǙǛǞǠǢǤǦǨǪǬǮǴǶǷǸǺǼǾȀȂȄȆȈȊȌȎȐȒȔȖȘȚȜȞȠȢȤȦȨȪȬȮȰȲȺȻȽȾɁɃɄɅɆɈɊɌɎ',
                          'āăąćĉċčďđēĕėęěĝğġģĥħĩīĭįĵķĺļľłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷÿźżžɓƃƅɔƈɖɗƌǝəɛƒɠɣɩɨƙɯɲɵơƣƥʀƨʃƭʈưʊʋƴƶʒƹƽǎǐǒǔǖǘǚǜǟǡǣǥǧǩǫǭǯǵƕƿǹǻǽǿȁȃȅȇȉȋȍȏȑȓȕȗșțȝȟƞȣȥȧȩȫȭȯȱȳⱥȼƚⱦɂƀʉʌɇɉɋɍɏ');
    END IF;
    IF n ~ '[ͅͰͲͶͿΆΈΉΊΌΎΏΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΪΫςϏϘϚϜϞϠϢϤϦϨϪϬϮϷϺϽϾϿ]' THEN
        n := translate(n, 'ͅͰͲͶͿΆΈΉΊΌΎΏΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΪΫςϏϘϚϜϞϠϢϤϦϨϪϬϮϷϺϽϾϿ',
                          'ιͱͳͷϳάέήίόύώαβγδεζηθικλμνξοπρστυφχψωϊϋσϗϙϛϝϟϡϣϥϧϩϫϭϯϸϻͻͼͽ');
    END IF;
    IF n ~ '[ЀЁЂЃЄЅІЇЈЉЊЋЌЍЎЏАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯѠѢѤѦѨѪѬѮѰѲѴѶѸѺѼѾҀҊҌҎҐҒҔҖҘҚҜҞҠҢҤҦҨҪҬҮҰҲҴҶҸҺҼҾӀӁӃӅӇӉӋӍӐӒӔӖӘӚӜӞӠӢӤӦӨӪӬӮӰӲӴӶӸӺӼӾԀԂԄԆԈԊԌԎԐԒԔԖԘԚԜԞԠԢԤԦԨԪԬԮ]' THEN
        n := translate(n, 'ЀЁЂЃЄЅІЇЈЉЊЋЌЍЎЏАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯѠѢѤѦѨѪѬѮѰѲѴѶѸѺѼѾҀҊҌҎҐҒҔҖҘҚҜҞҠҢҤҦҨҪҬҮҰҲҴҶҸҺҼҾӀӁӃӅӇӉӋӍӐӒӔӖӘӚӜӞӠӢӤӦӨӪӬӮӰӲӴӶӸӺӼӾԀԂԄԆԈԊԌԎԐԒԔԖԘԚԜԞԠԢԤԦԨԪԬԮ',
                          'ѐёђѓєѕіїјљњћќѝўџабвгдежзийклмнопрстуфхцчшщъыьэюяѡѣѥѧѩѫѭѯѱѳѵѷѹѻѽѿҁҋҍҏґғҕҗҙқҝҟҡңҥҧҩҫҭүұҳҵҷҹһҽҿӏӂӄӆӈӊӌӎӑӓӕӗәӛӝӟӡӣӥӧөӫӭӯӱӳӵӷӹӻӽӿԁԃԅԇԉԋԍԏԑԓԕԗԙԛԝԟԡԣԥԧԩԫԭԯ');
    END IF;
    IF n ~ '[ԱԲԳԴԵԶԷԸԹԺԻԼԽԾԿՀՁՂՃՄՅՆՇՈՉՊՋՌՍՎՏՐՑՒՓՔՕՖႠႡႢႣႤႥႦႧႨႩႪႫႬႭႮႯႰႱႲႳႴႵႶႷႸႹႺႻႼႽႾႿჀჁჂჃჄჅჇჍᏸᏹᏺᏻᏼᏽᲀᲁᲂᲃᲄᲅᲆᲇᲈᲐᲑᲒᲓᲔᲕᲖᲗᲘᲙᲚᲛᲜᲝᲞᲟᲠᲡᲢᲣᲤᲥᲦᲧᲨᲩᲪᲫᲬᲭᲮᲯᲰᲱᲲᲳᲴᲵᲶᲷᲸᲹᲺᲽᲾᲿ]' THEN
        n := translate(n, 'ԱԲԳԴԵԶԷԸԹԺԻԼԽԾԿՀՁՂՃՄՅՆՇՈՉՊՋՌՍՎՏՐՑՒՓՔՕՖႠႡႢႣႤႥႦႧႨႩႪႫႬႭႮႯႰႱႲႳႴႵႶႷႸႹႺႻႼႽႾႿჀჁჂჃჄჅჇჍᏸᏹᏺᏻᏼᏽᲀᲁᲂᲃᲄᲅᲆᲇᲈᲐᲑᲒᲓᲔᲕᲖᲗᲘᲙᲚᲛᲜᲝᲞᲟᲠᲡᲢᲣᲤᲥᲦᲧᲨᲩᲪᲫᲬᲭᲮᲯᲰᲱᲲᲳᲴᲵᲶᲷᲸᲹᲺᲽᲾᲿ',
                          'աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքօֆⴀⴁⴂⴃⴄⴅⴆⴇⴈⴉⴊⴋⴌⴍⴎⴏⴐⴑⴒⴓⴔⴕⴖⴗⴘⴙⴚⴛⴜⴝⴞⴟⴠⴡⴢⴣⴤⴥⴧⴭᏰᏱᏲᏳᏴᏵвдосттъѣꙋაბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰჱჲჳჴჵჶჷჸჹჺჽჾჿ');
    END IF;
    IF n ~ '[ḀḂḄḆḈḊḌḎḐḒḔḖḘḚḜḞḠḢḤḦḨḪḬḮḰḲḴḶḸḺḼḾṀṂṄṆṈṊṌṎṐṒṔṖṘṚṜṞṠṢṤṦṨṪṬṮṰṲṴṶṸṺṼṾẀẂẄẆẈẊẌẎẐẒẔẠẢẤẦẨẪẬẮẰẲẴẶẸẺẼẾỀỂỄỆỈỊỌỎỐỒỔỖỘỚỜỞỠỢỤỦỨỪỬỮỰỲỴỶỸỺỼỾἈἉἊἋἌἍἎἏἘἙἚἛἜἝἨἩἪἫἬἭἮἯἸἹἺἻἼἽἾἿὈὉὊὋὌὍὙὛὝὟὨὩὪὫὬὭὮὯᾸᾹᾺῈῊῘῙῚῨῩῪῬῸῺ]' THEN
        n := translate(n, 'ḀḂḄḆḈḊḌḎḐḒḔḖḘḚḜḞḠḢḤḦḨḪḬḮḰḲḴḶḸḺḼḾṀṂṄṆṈṊṌṎṐṒṔṖṘṚṜṞṠṢṤṦṨṪṬṮṰṲṴṶṸṺṼṾẀẂẄẆẈẊẌẎẐẒẔẠẢẤẦẨẪẬẮẰẲẴẶẸẺẼẾỀỂỄỆỈỊỌỎỐỒỔỖỘỚỜỞỠỢỤỦỨỪỬỮỰỲỴỶỸỺỼỾἈἉἊἋἌἍἎἏἘἙἚἛἜἝἨἩἪἫἬἭἮἯἸἹἺἻἼἽἾἿὈὉὊὋὌὍὙὛὝὟὨὩὪὫὬὭὮὯᾸᾹᾺῈῊῘῙῚῨῩῪῬῸῺ',
                          'ḁḃḅḇḉḋḍḏḑḓḕḗḙḛḝḟḡḣḥḧḩḫḭḯḱḳḵḷḹḻḽḿṁṃṅṇṉṋṍṏṑṓṕṗṙṛṝṟṡṣṥṧṩṫṭṯṱṳṵṷṹṻṽṿẁẃẅẇẉẋẍẏẑẓẕạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹỻỽỿἀἁἂἃἄἅἆἇἐἑἒἓἔἕἠἡἢἣἤἥἦἧἰἱἲἳἴἵἶἷὀὁὂὃὄὅὑὓὕὗὠὡὢὣὤὥὦὧᾰᾱὰὲὴῐῑὶῠῡὺῥὸὼ');
    END IF;
    IF n ~ '[ℲↃⰀⰁⰂⰃⰄⰅⰆⰇⰈⰉⰊⰋⰌⰍⰎⰏⰐⰑⰒⰓⰔⰕⰖⰗⰘⰙⰚⰛⰜⰝⰞⰟⰠⰡⰢⰣⰤⰥⰦⰧⰨⰩⰪⰫⰬⰭⰮⰯⱠⱢⱣⱤⱧⱩⱫⱭⱮⱯⱰⱲⱵⱾⱿⲀⲂⲄⲆⲈⲊⲌⲎⲐⲒⲔⲖⲘⲚⲜⲞⲠⲢⲤⲦⲨⲪⲬⲮⲰⲲⲴⲶⲸⲺⲼⲾⳀⳂⳄⳆⳈⳊⳌⳎⳐⳒⳔⳖⳘⳚⳜⳞⳠⳢⳫⳭⳲꙀꙂꙄꙆꙈꙊꙌꙎꙐꙒꙔꙖꙘꙚꙜꙞꙠꙢꙤꙦꙨꙪꙬꚀꚂꚄꚆꚈꚊꚌꚎꚐꚒꚔꚖꚘꚚꜢꜤꜦꜨꜪꜬꜮꜲꜴꜶꜸꜺꜼꜾꝀꝂꝄꝆꝈꝊꝌꝎꝐꝒꝔꝖꝘꝚꝜꝞꝠꝢꝤꝦꝨꝪꝬꝮꝹꝻꝽꝾꞀꞂꞄꞆꞋꞍꞐꞒꞖꞘꞚꞜꞞꞠꞢꞤꞦꞨꞪꞫꞬꞭꞮꞰꞱꞲꞳꞴꞶꞸꞺꞼꞾꟀꟂꟄꟅꟆꟇꟉꟐꟖꟘꟵꭰꭱꭲꭳꭴꭵꭶꭷꭸꭹꭺꭻꭼꭽꭾꭿꮀꮁꮂꮃꮄꮅꮆꮇꮈꮉꮊꮋꮌꮍꮎꮏꮐꮑꮒꮓꮔꮕꮖꮗꮘꮙꮚꮛꮜꮝꮞꮟꮠꮡꮢꮣꮤꮥꮦꮧꮨꮩꮪꮫꮬꮭꮮꮯꮰꮱꮲꮳꮴꮵꮶꮷꮸꮹꮺꮻꮼꮽꮾꮿ]' THEN
        n := translate(n, 'ℲↃⰀⰁⰂⰃⰄⰅⰆⰇⰈⰉⰊⰋⰌⰍⰎⰏⰐⰑⰒⰓⰔⰕⰖⰗⰘⰙⰚⰛⰜⰝⰞⰟⰠⰡⰢⰣⰤⰥⰦⰧⰨⰩⰪⰫⰬⰭⰮⰯⱠⱢⱣⱤⱧⱩⱫⱭⱮⱯⱰⱲⱵⱾⱿⲀⲂⲄⲆⲈⲊⲌⲎⲐⲒⲔⲖⲘⲚⲜⲞⲠⲢⲤⲦⲨⲪⲬⲮⲰⲲⲴⲶⲸⲺⲼⲾⳀⳂⳄⳆⳈⳊⳌⳎⳐⳒⳔⳖⳘⳚⳜⳞⳠⳢⳫⳭⳲꙀꙂꙄꙆꙈꙊꙌꙎꙐꙒꙔꙖꙘꙚꙜꙞꙠꙢꙤꙦꙨꙪꙬꚀꚂꚄꚆꚈꚊꚌꚎꚐꚒꚔꚖꚘꚚꜢꜤꜦꜨꜪꜬꜮꜲꜴꜶꜸꜺꜼꜾꝀꝂꝄꝆꝈꝊꝌꝎꝐꝒꝔꝖꝘꝚꝜꝞꝠꝢꝤꝦꝨꝪꝬꝮꝹꝻꝽꝾꞀꞂꞄꞆꞋꞍꞐꞒꞖꞘꞚꞜꞞꞠꞢꞤꞦꞨꞪꞫꞬꞭꞮꞰꞱꞲꞳꞴꞶꞸꞺꞼꞾꟀꟂꟄꟅꟆꟇꟉꟐꟖꟘꟵꭰꭱꭲꭳꭴꭵꭶꭷꭸꭹꭺꭻꭼꭽꭾꭿꮀꮁꮂꮃꮄꮅꮆꮇꮈꮉꮊꮋꮌꮍꮎꮏꮐꮑꮒꮓꮔꮕꮖꮗꮘꮙꮚꮛꮜꮝꮞꮟꮠꮡꮢꮣꮤꮥꮦꮧꮨꮩꮪꮫꮬꮭꮮꮯꮰꮱꮲꮳꮴꮵꮶꮷꮸꮹꮺꮻꮼꮽꮾꮿ',
                          'ⅎↄⰰⰱⰲⰳⰴⰵⰶⰷⰸⰹⰺⰻⰼⰽⰾⰿⱀⱁⱂⱃⱄⱅⱆⱇⱈⱉⱊⱋⱌⱍⱎⱏⱐⱑⱒⱓⱔⱕⱖⱗⱘⱙⱚⱛⱜⱝⱞⱟⱡɫᵽɽⱨⱪⱬɑɱɐɒⱳⱶȿɀⲁⲃⲅⲇⲉⲋⲍⲏⲑⲓⲕⲗⲙⲛⲝⲟⲡⲣⲥⲧⲩⲫⲭⲯⲱⲳⲵⲷⲹⲻⲽⲿⳁⳃⳅⳇⳉⳋⳍⳏⳑⳓⳕⳗⳙⳛⳝⳟⳡⳣⳬⳮⳳꙁꙃꙅꙇꙉꙋꙍꙏꙑꙓꙕꙗꙙꙛꙝꙟꙡꙣꙥꙧꙩꙫꙭꚁꚃꚅꚇꚉꚋꚍꚏꚑꚓꚕꚗꚙꚛꜣꜥꜧꜩꜫꜭꜯꜳꜵꜷꜹꜻꜽꜿꝁꝃꝅꝇꝉꝋꝍꝏꝑꝓꝕꝗꝙꝛꝝꝟꝡꝣꝥꝧꝩꝫꝭꝯꝺꝼᵹꝿꞁꞃꞅꞇꞌɥꞑꞓꞗꞙꞛꞝꞟꞡꞣꞥꞧꞩɦɜɡɬɪʞʇʝꭓꞵꞷꞹꞻꞽꞿꟁꟃꞔʂᶎꟈꟊꟑꟗꟙꟶᎠᎡᎢᎣᎤᎥᎦᎧᎨᎩᎪᎫᎬᎭᎮᎯᎰᎱᎲᎳᎴᎵᎶᎷᎸᎹᎺᎻᎼᎽᎾᎿᏀᏁᏂᏃᏄᏅᏆᏇᏈᏉᏊᏋᏌᏍᏎᏏᏐᏑᏒᏓᏔᏕᏖᏗᏘᏙᏚᏛᏜᏝᏞᏟᏠᏡᏢᏣᏤᏥᏦᏧᏨᏩᏪᏫᏬᏭᏮᏯ');
    END IF;
    IF n ~ '[𐐀𐐁𐐂𐐃𐐄𐐅𐐆𐐇𐐈𐐉𐐊𐐋𐐌𐐍𐐎𐐏𐐐𐐑𐐒𐐓𐐔𐐕𐐖𐐗𐐘𐐙𐐚𐐛𐐜𐐝𐐞𐐟𐐠𐐡𐐢𐐣𐐤𐐥𐐦𐐧𐒰𐒱𐒲𐒳𐒴𐒵𐒶𐒷𐒸𐒹𐒺𐒻𐒼𐒽𐒾𐒿𐓀𐓁𐓂𐓃𐓄𐓅𐓆𐓇𐓈𐓉𐓊𐓋𐓌𐓍𐓎𐓏𐓐𐓑𐓒𐓓𐕰𐕱𐕲𐕳𐕴𐕵𐕶𐕷𐕸𐕹𐕺𐕼𐕽𐕾𐕿𐖀𐖁𐖂𐖃𐖄𐖅𐖆𐖇𐖈𐖉𐖊𐖌𐖍𐖎𐖏𐖐𐖑𐖒𐖔𐖕𐲀𐲁𐲂𐲃𐲄𐲅𐲆𐲇𐲈𐲉𐲊𐲋𐲌𐲍𐲎𐲏𐲐𐲑𐲒𐲓𐲔𐲕𐲖𐲗𐲘𐲙𐲚𐲛𐲜𐲝𐲞𐲟𐲠𐲡𐲢𐲣𐲤𐲥𐲦𐲧𐲨𐲩𐲪𐲫𐲬𐲭𐲮𐲯𐲰𐲱𐲲𑢠𑢡𑢢𑢣𑢤𑢥𑢦𑢧𑢨𑢩𑢪𑢫𑢬𑢭𑢮𑢯𑢰𑢱𑢲𑢳𑢴𑢵𑢶𑢷𑢸𑢹𑢺𑢻𑢼𑢽𑢾𑢿𖹀𖹁𖹂𖹃𖹄𖹅𖹆𖹇𖹈𖹉𖹊𖹋𖹌𖹍𖹎𖹏𖹐𖹑𖹒𖹓𖹔𖹕𖹖𖹗𖹘𖹙𖹚𖹛𖹜𖹝𖹞𖹟𞤀𞤁𞤂𞤃𞤄𞤅𞤆𞤇𞤈𞤉𞤊𞤋𞤌𞤍𞤎𞤏𞤐𞤑𞤒𞤓𞤔𞤕𞤖𞤗𞤘𞤙𞤚𞤛𞤜𞤝𞤞𞤟𞤠𞤡]' THEN
        n := translate(n, '𐐀𐐁𐐂𐐃𐐄𐐅𐐆𐐇𐐈𐐉𐐊𐐋𐐌𐐍𐐎𐐏𐐐𐐑𐐒𐐓𐐔𐐕𐐖𐐗𐐘𐐙𐐚𐐛𐐜𐐝𐐞𐐟𐐠𐐡𐐢𐐣𐐤𐐥𐐦𐐧𐒰𐒱𐒲𐒳𐒴𐒵𐒶𐒷𐒸𐒹𐒺𐒻𐒼𐒽𐒾𐒿𐓀𐓁𐓂𐓃𐓄𐓅𐓆𐓇𐓈𐓉𐓊𐓋𐓌𐓍𐓎𐓏𐓐𐓑𐓒𐓓𐕰𐕱𐕲𐕳𐕴𐕵𐕶𐕷𐕸𐕹𐕺𐕼𐕽𐕾𐕿𐖀𐖁𐖂𐖃𐖄𐖅𐖆𐖇𐖈𐖉𐖊𐖌𐖍𐖎𐖏𐖐𐖑𐖒𐖔𐖕𐲀𐲁𐲂𐲃𐲄𐲅𐲆𐲇𐲈𐲉𐲊𐲋𐲌𐲍𐲎𐲏𐲐𐲑𐲒𐲓𐲔𐲕𐲖𐲗𐲘𐲙𐲚𐲛𐲜𐲝𐲞𐲟𐲠𐲡𐲢𐲣𐲤𐲥𐲦𐲧𐲨𐲩𐲪𐲫𐲬𐲭𐲮𐲯𐲰𐲱𐲲𑢠𑢡𑢢𑢣𑢤𑢥𑢦𑢧𑢨𑢩𑢪𑢫𑢬𑢭𑢮𑢯𑢰𑢱𑢲𑢳𑢴𑢵𑢶𑢷𑢸𑢹𑢺𑢻𑢼𑢽𑢾𑢿𖹀𖹁𖹂𖹃𖹄𖹅𖹆𖹇𖹈𖹉𖹊𖹋𖹌𖹍𖹎𖹏𖹐𖹑𖹒𖹓𖹔𖹕𖹖𖹗𖹘𖹙𖹚𖹛𖹜𖹝𖹞𖹟𞤀𞤁𞤂𞤃𞤄𞤅𞤆𞤇𞤈𞤉𞤊𞤋𞤌𞤍𞤎𞤏𞤐𞤑𞤒𞤓𞤔𞤕𞤖𞤗𞤘𞤙𞤚𞤛𞤜𞤝𞤞𞤟𞤠𞤡',
                          '𐐨𐐩𐐪𐐫𐐬𐐭𐐮𐐯𐐰𐐱𐐲𐐳𐐴𐐵𐐶𐐷𐐸𐐹𐐺𐐻𐐼𐐽𐐾𐐿𐑀𐑁𐑂𐑃𐑄𐑅𐑆𐑇𐑈𐑉𐑊𐑋𐑌𐑍𐑎𐑏𐓘𐓙𐓚𐓛𐓜𐓝𐓞𐓟𐓠𐓡𐓢𐓣𐓤𐓥𐓦𐓧𐓨𐓩𐓪𐓫𐓬𐓭𐓮𐓯𐓰𐓱𐓲𐓳𐓴𐓵𐓶𐓷𐓸𐓹𐓺𐓻𐖗𐖘𐖙𐖚𐖛𐖜𐖝𐖞𐖟𐖠𐖡𐖣𐖤𐖥𐖦𐖧𐖨𐖩𐖪𐖫𐖬𐖭𐖮𐖯𐖰𐖱𐖳𐖴𐖵𐖶𐖷𐖸𐖹𐖻𐖼𐳀𐳁𐳂𐳃𐳄𐳅𐳆𐳇𐳈𐳉𐳊𐳋𐳌𐳍𐳎𐳏𐳐𐳑𐳒𐳓𐳔𐳕𐳖𐳗𐳘𐳙𐳚𐳛𐳜𐳝𐳞𐳟𐳠𐳡𐳢𐳣𐳤𐳥𐳦𐳧𐳨𐳩𐳪𐳫𐳬𐳭𐳮𐳯𐳰𐳱𐳲𑣀𑣁𑣂𑣃𑣄𑣅𑣆𑣇𑣈𑣉𑣊𑣋𑣌𑣍𑣎𑣏𑣐𑣑𑣒𑣓𑣔𑣕𑣖𑣗𑣘𑣙𑣚𑣛𑣜𑣝𑣞𑣟𖹠𖹡𖹢𖹣𖹤𖹥𖹦𖹧𖹨𖹩𖹪𖹫𖹬𖹭𖹮𖹯𖹰𖹱𖹲𖹳𖹴𖹵𖹶𖹷𖹸𖹹𖹺𖹻𖹼𖹽𖹾𖹿𞤢𞤣𞤤𞤥𞤦𞤧𞤨𞤩𞤪𞤫𞤬𞤭𞤮𞤯𞤰𞤱𞤲𞤳𞤴𞤵𞤶𞤷𞤸𞤹𞤺𞤻𞤼𞤽𞤾𞤿𞥀𞥁𞥂𞥃');
    END IF;
    n := btrim(n, E'\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u1680\u2028\u2029');
    IF n ~ '[\u0009\u000a\u000b\u000c\u000d\u0085\u1680\u2028\u2029]|  ' THEN
        n := regexp_replace(n, '[\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u1680\u2028\u2029]+', ' ', 'g');
    END IF;
    RETURN n;
END
$fn$;
DO $$
            DECLARE
                found bigint := (SELECT count(*) FROM (SELECT healthcare_entity_id AS entity, array_agg(id ORDER BY id) AS ids FROM patients GROUP BY healthcare_entity_id, identity_key(patient_id) HAVING count(*) > 1) AS d);
            BEGIN
                IF found > 0 THEN
                    RAISE EXCEPTION 'patient: version 10 refused: % patient codes are the same identifier (Unicode NFKC, case folding, spaces) within an entity; merge the duplicates or correct one of each, then run the command again', found;
                END IF;
            END
            $$;
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
DO $$
            BEGIN
                IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                           WHERE c.relname = 'patients_entity_patient_id_identity_key' AND NOT i.indisvalid) THEN
                    RAISE NOTICE 'dropping invalid index patients_entity_patient_id_identity_key left by an earlier attempt';
                    EXECUTE 'DROP INDEX IF EXISTS patients_entity_patient_id_identity_key';
                END IF;
            END
            $$;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS patients_entity_patient_id_identity_key ON patients (healthcare_entity_id, identity_key(patient_id));
BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
DROP INDEX CONCURRENTLY IF EXISTS patients_entity_patient_id_ci_key;
BEGIN;
DO $migrate$
DECLARE
    found record;
BEGIN
    FOR found IN
        SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'v' AND pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE 'migrate: version schema of the patient service%'
    LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I.%I CASCADE', found.nspname, found.relname);
    END LOOP;
END
$migrate$;
UPDATE public.alembic_version SET version_num='0010' WHERE public.alembic_version.version_num = '0009';
INSERT INTO public.schema_migrations (version, description) VALUES (10, 'Make patient_id unique within an entity as the same identifier, whatever the locale');
DO $migrate$
DECLARE
    spec jsonb := '{"marker": "migrate: version schema of the patient service%", "schema": "public", "schemas": {"patient_v5": {"comment": "migrate: version schema of the patient service, contract 5 (applied)", "hide": {"patients": ["phone_original"]}}}, "skip": ["alembic_version", "schema_migrations"]}';
    target record;
    rel record;
    acl record;
    columns text;
    body text;
BEGIN
    FOR target IN
        SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE pg_catalog.obj_description(n.oid, 'pg_namespace') LIKE spec ->> 'marker'
          AND NOT (spec -> 'schemas') ? n.nspname
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', target.nspname);
    END LOOP;
    FOR target IN SELECT key AS name, value AS v FROM jsonb_each(spec -> 'schemas') LOOP
        EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target.name);
        EXECUTE format('COMMENT ON SCHEMA %I IS %L', target.name, target.v ->> 'comment');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(target.name) AND c.relkind = 'v'
              AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', spec ->> 'schema', c.relname)) IS NULL
        LOOP
            EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
        END LOOP;
        FOR rel IN
            SELECT c.oid, c.relname FROM pg_catalog.pg_class c
            WHERE c.relnamespace = pg_catalog.to_regnamespace(spec ->> 'schema')
              AND c.relkind IN ('r', 'p') AND NOT (spec -> 'skip') ? c.relname
              AND c.relname NOT LIKE '\_migrate\_%'
            ORDER BY c.relname
        LOOP
            SELECT pg_catalog.string_agg(pg_catalog.format('%I AS %I', x.attname, x.shown), ', '
                                         ORDER BY x.attnum)
            INTO columns
            FROM (SELECT a.attname, a.attnum,
                         coalesce(target.v #>> ARRAY['rename', rel.relname, a.attname], a.attname) AS shown
                  FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) x
            WHERE NOT coalesce(target.v #> ARRAY['hide', rel.relname], '[]') ? x.shown;
            body := format('VIEW %I.%I WITH (security_invoker = true) AS SELECT %s FROM %I.%I',
                           target.name, rel.relname, columns, spec ->> 'schema', rel.relname);
            BEGIN
                EXECUTE 'CREATE OR REPLACE ' || body;
            EXCEPTION WHEN invalid_table_definition THEN
                -- a column left or changed its type: the view is made again
                EXECUTE format('DROP VIEW %I.%I', target.name, rel.relname);
                EXECUTE 'CREATE ' || body;
            END;
            -- The view's grants are its table's (and, security_invoker, so is its RLS).
            FOR acl IN
                SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
                WHERE v.oid = pg_catalog.format('%I.%I', target.name, rel.relname)::pg_catalog.regclass
                  AND a.grantee <> v.relowner
            LOOP
                EXECUTE format('REVOKE ALL ON %I.%I FROM %s', target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
            FOR acl IN
                SELECT a.grantee, a.privilege_type FROM pg_catalog.pg_class t, pg_catalog.aclexplode(t.relacl) a
                WHERE t.oid = rel.oid AND a.grantee <> t.relowner
            LOOP
                EXECUTE format('GRANT %s ON %I.%I TO %s', acl.privilege_type, target.name, rel.relname,
                               CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
            END LOOP;
        END LOOP;
        -- USAGE on the schema for exactly those who hold a grant on one of its views.
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = pg_catalog.to_regnamespace(target.name) AND a.grantee <> n.nspowner
        LOOP
            EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
        FOR acl IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_class v, pg_catalog.aclexplode(v.relacl) a
            WHERE v.relnamespace = pg_catalog.to_regnamespace(target.name) AND a.grantee <> v.relowner
        LOOP
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', target.name,
                           CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                                ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(acl.grantee)) END);
        END LOOP;
    END LOOP;
END
$migrate$;
COMMIT;
